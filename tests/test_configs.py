"""Every option of every config group composes; config invariants hold."""

from __future__ import annotations

import importlib

import pytest
from omegaconf import OmegaConf

from conftest import CONF, compose_cfg

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
    assert (cfg.backbone.name, cfg.benchmark.name, cfg.method.name, cfg.pet.type, cfg.strategy.name) == \
        ("tiny_t5", "synthetic", "sapt", "lora", "cpu")
    assert cfg.logger.wandb.enabled and cfg.logger.wandb.offline


def test_strategy_names_are_lightning_strategies():
    from lightning.pytorch.strategies import StrategyRegistry

    for path in (CONF / "strategy").glob("*.yaml"):
        s = OmegaConf.load(path)
        assert s.strategy == "auto" or s.strategy in StrategyRegistry, path


def test_method_names_match_registry():
    registry = importlib.import_module("sapt_lightning.methods.registry")
    for path in (CONF / "method").glob("*.yaml"):
        assert OmegaConf.load(path).name in registry.METHODS, path


@pytest.mark.parametrize("backbone, lr, kl, batch, source", [
    ("t5_large", 3e-4, 0.5, 8, 512), ("t5_xl", 1e-4, 0.5, 8, 512), ("llama2_7b", 5e-5, 1.0, 2, 1024),
    ("llama2_13b", 1e-5, 1.0, 2, 1024)])
def test_paper_presets_take_the_backbones_hyper_parameters(backbone, lr, kl, batch, source):
    """SAPT_SPEC.md 5.2 / App. C: the experiment's settings follow the backbone and the benchmark."""
    cfg = compose_cfg(["experiment=superni_order1", f"backbone={backbone}"])
    assert (cfg.method.lr, cfg.method.arm.kl_weight, cfg.data.batch_size, cfg.data.max_source_length) == (lr, kl, batch, source)
    long = compose_cfg(["experiment=long_sequence_order3", f"backbone={backbone}"])
    assert long.method.arm.kl_weight == (0.1 if backbone.startswith("t5") else 2.0)


@pytest.mark.parametrize("method, r, dropout, lr, epochs", [
    ("sapt", 4, 0.0, 3e-4, 100),      # the release's SuperNI script (SAPT_SPEC.md 5.2)
    ("single", 4, 0.0, 3e-4, 100),    # its --run_single: SAPT's own LoRA
    ("seq_lora", 8, 0.0, 3e-4, 100),  # the baselines' LoRA rank (8)
    ("olora", 8, 0.1, 1e-3, 1)])      # O-LoRA's own scripts (8)
def test_paper_presets_give_each_method_its_paper_setting(method, r, dropout, lr, epochs):
    cfg = compose_cfg(["experiment=superni_order1", f"method={method}"])
    assert (cfg.pet.r, cfg.pet.dropout, cfg.method.lr, cfg.trainer.max_epochs) == (r, dropout, lr, epochs)
