"""Every option of every config group composes; config invariants hold."""

from __future__ import annotations

import importlib

import pytest
from conftest import CONF, compose_cfg
from omegaconf import OmegaConf

SKIP_GROUPS = {"hydra", "local"}
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in SKIP_GROUPS)
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def _extra_for(group: str, option: str) -> list[str]:
    """Options that only make sense with a matching partner (an order needs its benchmark)."""
    if group == "order":
        bench = OmegaConf.load(CONF / "order" / f"{option}.yaml").benchmark
        return [f"benchmark={bench}"]
    return []


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose_cfg([f"{group}={option}", *_extra_for(group, option)])
    assert cfg is not None


def test_every_option_composes_with_smoke():
    for group, option in OPTIONS:
        if group != "debug":
            compose_cfg([f"{group}={option}", *_extra_for(group, option), "debug=smoke"])


def test_all_ablations_together_record_their_names():
    names = [p.stem for p in (CONF / "ablation").glob("*.yaml") if p.stem != "none"]
    cfg = compose_cfg([f"ablation=[{','.join(names)}]"])
    assert set(cfg.ablations) == set(names)
    assert cfg.method.arm.enabled is False


def test_ablation_wins_over_experiment_defaults():
    cfg = compose_cfg(["ablation=no_arm"])
    assert cfg.method.arm.enabled is False


def test_orders_name_their_benchmark_and_benchmarks_exist():
    benchmarks = {p.stem for p in (CONF / "benchmark").glob("*.yaml")}
    for path in (CONF / "order").glob("*.yaml"):
        order = OmegaConf.load(path)
        assert order.benchmark in benchmarks, path
        assert len(order.tasks) == 15 and len(set(order.tasks)) == 15, path


def test_default_is_the_quickstart():
    cfg = compose_cfg([])
    assert (cfg.backbone.name, cfg.benchmark.name, cfg.method.name, cfg.pet.type, cfg.strategy.name) == (
        "tiny_t5",
        "synthetic",
        "sapt",
        "lora",
        "cpu",
    )
    assert cfg.logger.wandb.enabled and cfg.logger.wandb.offline


def test_strategy_names_are_lightning_strategies():
    from lightning.pytorch.strategies import StrategyRegistry

    for path in (CONF / "strategy").glob("*.yaml"):
        s = OmegaConf.load(path)
        assert s.strategy == "auto" or s.strategy in StrategyRegistry, path


def test_method_names_match_registry():
    registry = importlib.import_module("sapt_lightning.methods.registry")
    for path in (CONF / "method").glob("*.yaml"):
        assert OmegaConf.load(path).name in registry.available(), path


@pytest.mark.parametrize(
    "backbone, lr, kl, batch, source",
    [
        ("t5_large", 3e-4, 0.5, 8, 512),
        ("t5_xl", 1e-4, 0.5, 8, 512),
        ("llama2_7b", 5e-5, 1.0, 2, 1024),
        ("llama2_13b", 1e-5, 1.0, 2, 1024),
    ],
)
def test_paper_presets_take_the_backbones_hyper_parameters(backbone, lr, kl, batch, source):
    """docs/method.md §5.2 (paper App. C): the experiment's settings follow the backbone and the benchmark."""
    cfg = compose_cfg(["experiment=superni_order1", f"backbone={backbone}"])
    assert (cfg.method.lr, cfg.method.arm.kl_weight, cfg.data.batch_size, cfg.data.max_source_length) == (
        lr,
        kl,
        batch,
        source,
    )
    long = compose_cfg(["experiment=long_sequence_order3", f"backbone={backbone}"])
    assert long.method.arm.kl_weight == (0.1 if backbone.startswith("t5") else 2.0)
    assert cfg.method.generator.repetition_penalty == 2.5  # the release's sampling; the CPU default is 1.0
    assert cfg.method.sapt.pooling == "max"  # the release's router input; the CPU default is the mean


@pytest.mark.parametrize(
    "method, r, dropout, lr, epochs",
    [
        ("sapt", 4, 0.0, 3e-4, 100),  # the release's SuperNI script (docs/method.md §5.2)
        ("single", 4, 0.0, 3e-4, 100),  # its --run_single: SAPT's own LoRA
        ("seq_lora", 8, 0.0, 3e-4, 100),  # the baselines' LoRA rank (8)
        ("olora", 8, 0.1, 1e-3, 1),
    ],
)  # O-LoRA's own scripts (8)
def test_paper_presets_give_each_method_its_paper_setting(method, r, dropout, lr, epochs):
    cfg = compose_cfg(["experiment=superni_order1", f"method={method}"])
    assert (cfg.pet.r, cfg.pet.dropout, cfg.method.lr, cfg.trainer.max_epochs) == (r, dropout, lr, epochs)


@pytest.mark.parametrize(
    "experiment, lr, attn_lr, kl, hidden",
    [
        ("superni_order1", 3e-2, None, 1.0, 100),
        ("superni_order2", 3e-2, None, 1.0, 100),
        ("long_sequence_order3", 3e-1, 1e-2, 1.5, 200),
        ("long_sequence_order4", 3e-1, 1e-2, 1.3, 150),
    ],
)
def test_paper_presets_give_sapt_prompt_its_paper_setting(experiment, lr, attn_lr, kl, hidden):
    """docs/method.md §2.8: SAPT-Prompt trains with Adafactor at a constant lr (SuperNI 3e-2 for all;
    Long 3e-1 for prompts and keys, 1e-2 for the query), lambda 1 on SuperNI and (lambda, h) per
    Long order; its batch is SAPT-LoRA's. SAPT-LoRA on the same preset keeps the release's setting."""
    cfg = compose_cfg([f"experiment={experiment}", "method=sapt", "pet=prompt"])
    sapt = cfg.method.sapt
    assert (
        cfg.trainer.optimizer,
        cfg.method.lr,
        sapt.attn_lr,
        sapt.key_lr,
        cfg.method.arm.kl_weight,
        sapt.query_hidden,
    ) == ("adafactor", lr, attn_lr, None, kl, hidden)
    assert cfg.pet.lr is None  # the prompts train at method.lr
    lora = compose_cfg([f"experiment={experiment}", "method=sapt", "pet=lora"])
    assert (lora.trainer.optimizer, lora.method.lr, lora.method.sapt.attn_lr, lora.method.sapt.query_hidden) == (
        "adamw",
        3e-4,
        None,
        100,
    )
    assert lora.method.arm.kl_weight == (0.5 if experiment.startswith("superni") else 0.1)


@pytest.mark.parametrize("method", ["l2p", "lfpt5", "progprompt", "epi"])
def test_paper_presets_keep_the_prompt_baselines_at_a_prompt_learning_rate(method):
    """Their lr is method.lr (3e-2 under the presets, not the backbone's LoRA lr 3e-4)."""
    cfg = compose_cfg(["experiment=long_sequence_order3", f"method={method}"])
    assert (cfg.method.lr, cfg.pet.lr, cfg.trainer.optimizer) == (3e-2, None, "adamw")


def test_olora_long_order4_is_olora_with_its_scripts_lambda1_schedule():
    """docs/method.md §8: O-LoRA's Long script (paper order 4) runs λ1 = 0 for yelp, 0.5 from amazon
    through sst2 and 5 from dbpedia on; its results are named olora and it keeps O-LoRA's paper block."""
    from sapt_lightning.data.benchmarks import task_names
    from sapt_lightning.methods.baselines.olora import task_epochs, task_lambdas
    from sapt_lightning.run import check_config

    cfg = compose_cfg(["experiment=long_sequence_order4", "method=olora_long_order4", "strategy=cpu"])
    check_config(cfg)
    assert (cfg.method.name, cfg.pet.r, cfg.method.lr) == ("olora", 8, 1e-3)
    order = task_names(cfg)
    lambda1 = [task_lambdas(cfg.method, task)[0] for task in order]
    assert lambda1 == [0.0] + [0.5] * 8 + [5.0] * 6 and order[9] == "dbpedia"
    epochs = {task: task_epochs(cfg.method, task, int(cfg.trainer.max_epochs)) for task in order}
    assert epochs.pop("mnli") == 2 and set(epochs.values()) == {1}  # its script: MNLI 2 epochs
    lambda2 = {task: task_lambdas(cfg.method, task)[1] for task in order}
    assert {t for t, v in lambda2.items() if v == 0.1} == {"copa", "qqp", "sst2", "yahoo", "boolq"}
    assert {t for t, v in lambda2.items() if v == 0.3} == {"rte", "wic"} and lambda2["yelp"] == 0.0


@pytest.mark.parametrize(
    "per_task, message",
    [
        ("{yelpp: {lambda_orth: 0}}", r"method.per_task.yelpp: no task 'yelpp' in this stream's order \(yelp, amazon"),
        (
            "{yelp: {lambda1: 0}}",
            r"method.per_task.yelp.lambda1: unknown; a task can set lambda_orth, lambda_l2, epochs",
        ),
        ("{mnli: {epochs: 0}}", r"method.per_task.mnli.epochs=0: expected an integer >= 1"),
        ("{mnli: {epochs: 1.5}}", r"method.per_task.mnli.epochs=1.5: expected an integer >= 1"),
        ("{yelp: {lambda_orth: -1}}", r"method.per_task.yelp.lambda_orth=-1: expected a number >= 0"),
        ("{yelp: {lambda_l2: nan}}", r"method.per_task.yelp.lambda_l2=nan: expected a number >= 0"),
        ("{yelp: 0}", r"method.per_task.yelp=0: expected \{lambda_orth"),
        ("[yelp]", r"method.per_task=\['yelp'\]: expected a mapping"),
    ],
)
def test_olora_per_task_is_checked_before_anything_runs(per_task, message):
    from sapt_lightning.errors import ConfigError
    from sapt_lightning.run import check_config

    cfg = compose_cfg(
        [
            "experiment=long_sequence_order4",
            "method=olora",
            "strategy=cpu",
            "benchmark.num_tasks=2",
            f"method.per_task={per_task}",
        ]
    )
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


@pytest.mark.parametrize("key, value", [("lambda_orth", "-1"), ("lambda_l2", "nan"), ("lambda_orth", "inf")])
def test_olora_global_lambdas_are_checked(key, value):
    from sapt_lightning.errors import ConfigError
    from sapt_lightning.run import check_config

    with pytest.raises(ConfigError, match=rf"method.{key}={value} cannot work: it must be a number >= 0"):
        check_config(compose_cfg(["method=olora", "strategy=cpu", f"method.{key}={value}"]))


@pytest.mark.parametrize("value", ["-1", "0", "fast"])
def test_lr_after_first_must_be_a_positive_number(value):
    from sapt_lightning.errors import ConfigError
    from sapt_lightning.run import check_config

    with pytest.raises(ConfigError, match=rf"method.lr_after_first='?{value}'? cannot work: it must be a number > 0"):
        check_config(compose_cfg(["strategy=cpu", f"method.lr_after_first={value}"]))


@pytest.mark.parametrize("extra", [[], ["method.per_task=null"], ["method.per_task={}"], ["method=olora_long_order4"]])
def test_olora_without_per_task_or_with_the_preset_passes_the_checks(extra):
    from sapt_lightning.run import check_config

    check_config(compose_cfg(["experiment=long_sequence_order4", "method=olora", "strategy=cpu", *extra]))


def test_a_paper_preset_on_a_benchmark_without_paper_settings_names_what_is_missing():
    from sapt_lightning.errors import ConfigError
    from sapt_lightning.run import check_config

    cfg = compose_cfg(["experiment=superni_order1", "benchmark=synthetic", "strategy=cpu"])
    with pytest.raises(
        ConfigError,
        match=r"data.batch_size cannot be resolved: .*\(backbone.paper.synthetic\), which "
        r"backbone=t5_large does not have",
    ):
        check_config(cfg)


def test_an_interpolation_to_a_missing_key_is_one_line_naming_both_keys():
    from sapt_lightning.errors import ConfigError
    from sapt_lightning.run import check_config

    cfg = compose_cfg(["strategy=cpu"])
    cfg.method.lr = "${method.no_such_key}"
    with pytest.raises(
        ConfigError, match=r"method.lr cannot be resolved: Interpolation key 'method.no_such_key' not found"
    ):
        check_config(cfg)


@pytest.mark.parametrize(
    "experiment, backbone, batch, accumulate, sapt_batch, sapt_accumulate",
    [
        ("superni_order1", "t5_large", 8, 8, 8, 4),
        ("long_sequence_order3", "t5_large", 8, 8, 16, 2),
        ("superni_order2", "llama2_7b", 1, 16, 2, 4),
    ],
)
def test_paper_presets_give_olora_its_global_batch_of_64_and_its_learning_rates(
    experiment, backbone, batch, accumulate, sapt_batch, sapt_accumulate
):
    """docs/method.md §8: O-LoRA's scripts train at 64 (T5: 8 x 8 GPUs; LLaMA: 1 x 8 x 8 GPUs), SAPT's at 32; the
    presets run T5 on one GPU and LLaMA on four (strategy=deepspeed_zero2, as the backbone file says)."""
    strategy = ["strategy=deepspeed_zero2"] if backbone.startswith("llama") else []
    olora = compose_cfg([f"experiment={experiment}", f"backbone={backbone}", "method=olora", *strategy])
    devices = int(olora.strategy.devices)
    assert (olora.data.batch_size, olora.trainer.accumulate_grad_batches) == (batch, accumulate)
    assert batch * accumulate * devices == 64
    # and its LLaMA script's learning rates: 1e-3 for the first task, 1e-4 after (T5: 1e-3 throughout)
    assert (olora.method.lr, olora.method.lr_after_first) == (1e-3, 1e-4 if backbone.startswith("llama") else None)
    sapt = compose_cfg([f"experiment={experiment}", f"backbone={backbone}", "method=sapt", *strategy])
    assert (sapt.data.batch_size, sapt.trainer.accumulate_grad_batches) == (sapt_batch, sapt_accumulate)
    assert sapt.method.lr_after_first is None
