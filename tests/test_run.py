"""End to end on CPU: run(cfg) on the synthetic stream with tiny random backbones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sapt_lightning.cli import precheck_run_dir
from sapt_lightning.run import run
from sapt_lightning.utils.phases import PHASES

SMOKE = ["debug=smoke", "logger=csv"]


def check_results(path, n_tasks: int, joint: bool = False) -> dict:
    results = json.loads(path.read_text())
    for key in ("method", "benchmark", "order", "metric", "matrix", "single", "summary", "config", "wall_s"):
        assert key in results, key
    spent = results["phases_s"]
    assert set(spent) == {*PHASES, "other"} and spent["training"] > 0 and spent["evaluation"] > 0
    assert sum(spent.values()) >= results["wall_s"] - 0.1  # the tasks' wall time, and what ran after them
    m = results["matrix"]
    assert len(m) == n_tasks and all(len(row) == n_tasks for row in m)
    for i, row in enumerate(m):
        if joint and i < n_tasks - 1:  # joint training (mtl): only the last row exists
            assert all(v is None for v in row)
            continue
        assert all(v is not None for v in row[: i + 1]) and all(v is None for v in row[i + 1 :])
        assert all(0 <= v <= 100 for v in row[: i + 1])
    assert set(results["summary"]) == {"ap", "f_ra", "fwt", "bwt"}
    return results


CLASSIFICATION_STREAM = ["benchmark.tasks=[topic,sentiment]"]


@pytest.mark.parametrize(
    "method", ["seq_lora", "single", "sapt", "replay", "olora", "progprompt", "l2p", "lfpt5", "epi", "mtl"]
)
def test_methods_run_end_to_end(make_cfg, tmp_path, method):
    stream = CLASSIFICATION_STREAM if method == "epi" else []
    results = run(make_cfg(*SMOKE, f"method={method}", *stream))
    saved = check_results(tmp_path / "run" / "results.json", 2, joint=method == "mtl")
    assert saved["method"] == method == results["method"]
    if method == "single":
        assert saved["single"] == [saved["matrix"][i][i] for i in range(2)]
    if method == "mtl":
        assert saved["summary"]["f_ra"] is None and saved["summary"]["ap"] == sum(saved["matrix"][1]) / 2
    assert (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").is_file()
    for png in ("score_matrix.png", "scores_over_time.png"):
        assert (tmp_path / "run" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Score matrix" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize(
    "overrides",
    [
        ["pet=prompt"],
        ["backbone=tiny_llama"],
        ["backbone=tiny_llama", "pet=prompt"],
        ["backbone=tiny_llama", "fidelity=official"],  # the release's LLaMA target weights, then the generator
        ["ablation=no_arm"],
        ["ablation=replay"],
        ["ablation=no_alignment"],
        ["ablation=no_sa"],
        ["ablation=no_sa", "pet=prompt"],
        ["fidelity=official"],
        ["method.sapt.mixing=loop"],
    ],
    ids=lambda o: ",".join(o),
)
def test_sapt_variants_run(make_cfg, tmp_path, overrides):
    run(make_cfg(*SMOKE, "method=sapt", *overrides, "backbone.tiny.pretrain_steps=0"))
    results = check_results(tmp_path / "run" / "results.json", 2)
    assert len(results["attention"]["test"]) == 2


def test_sapt_writes_per_task_artifacts(make_cfg, tmp_path):
    run(make_cfg(*SMOKE))
    task_dirs = sorted((tmp_path / "run" / "tasks").iterdir())
    assert [d.name for d in task_dirs] == ["1-reverse", "2-first_word"]
    for d in task_dirs:
        assert (d / "sapt_block.safetensors").is_file() and (d / "arm_target.json").is_file()
        pseudo = json.loads((d / "pseudo" / "train.json").read_text())
        assert pseudo["Instances"], d
    target = json.loads((task_dirs[1] / "arm_target.json").read_text())["target"]
    assert len(target) == 2 and sum(target) == pytest.approx(1, abs=1e-5)


def test_resume_skips_finished_tasks_and_gives_the_same_results(make_cfg, tmp_path):
    first = run(make_cfg(*SMOKE, run_dir=tmp_path / "a"))
    state = json.loads((tmp_path / "a" / "stream_state.json").read_text())
    assert state["completed"] == 2
    # Pretend the run stopped after task 1, then re-run the same command.
    state.update(completed=1, matrix=state["matrix"][:1])
    (tmp_path / "a" / "stream_state.json").write_text(json.dumps(state))
    again = run(make_cfg(*SMOKE, run_dir=tmp_path / "a"))
    assert again["matrix"] == first["matrix"]


def test_resume_refuses_another_config(make_cfg, tmp_path):
    from sapt_lightning.errors import ConfigError

    run(make_cfg(*SMOKE, run_dir=tmp_path / "a"))
    with pytest.raises(ConfigError, match="seed"):
        run(make_cfg(*SMOKE, "seed=7", run_dir=tmp_path / "a"))


def test_same_seed_same_results(make_cfg, tmp_path):
    a = run(make_cfg(*SMOKE, "method=seq_lora", run_dir=tmp_path / "a"))
    b = run(make_cfg(*SMOKE, "method=seq_lora", run_dir=tmp_path / "b"))
    assert a["matrix"] == b["matrix"]


def test_finished_blocks_stay_bit_identical(make_cfg, tmp_path, cache_dir):
    """Training task 2 must not touch task 1's LoRA block or key (only the query network is shared)."""
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.cl.loop import ContinualLoop
    from sapt_lightning.data.benchmarks import build_tasks
    from sapt_lightning.data.datamodule import ContinualDataModule
    from sapt_lightning.methods.registry import build_method
    from sapt_lightning.run import make_trainer

    cfg = make_cfg(*SMOKE, "trainer.max_steps=10")
    run_dir = Path(cfg.paths.output_dir)
    tasks = build_tasks(cfg)
    backbone = load_backbone(cfg.backbone, cache_dir)
    module = build_method(cfg, backbone)
    data = ContinualDataModule(tasks, backbone.tokenizer, "t5", 8, 16, 64, 16, 0)
    ContinualLoop(
        cfg, module, data, run_dir, lambda i, t, callbacks: make_trainer(cfg, run_dir, [], callbacks=callbacks)
    ).run()
    saved = load_file(run_dir / "tasks" / "1-reverse" / "sapt_block.safetensors")
    now = module.block_state(0)
    own = [k for k in saved if not k.startswith("query.")]
    assert len(own) > 2
    for key in own:
        assert torch.equal(saved[key], now[key]), key
    second = module.block_state(1)
    assert any(second[k].abs().sum() > 0 for k in second if k.endswith("lora_B")), "task 2's block never trained"


def test_nan_loss_stops_with_a_clear_message_and_stays_resumable(make_cfg, tmp_path, monkeypatch):
    from sapt_lightning.errors import TrainingDiverged
    from sapt_lightning.methods.baselines.seq_lora import SeqLoRAModule

    run(make_cfg(*SMOKE, "method=seq_lora", run_dir=tmp_path / "a"))
    state = json.loads((tmp_path / "a" / "stream_state.json").read_text())
    state.update(completed=1, matrix=state["matrix"][:1])  # as if it had stopped after task 1
    (tmp_path / "a" / "stream_state.json").write_text(json.dumps(state))
    monkeypatch.setattr(SeqLoRAModule, "task_loss", lambda self, batch: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(TrainingDiverged, match="step 0 of task 2"):
        run(make_cfg(*SMOKE, "method=seq_lora", run_dir=tmp_path / "a"))
    assert json.loads((tmp_path / "a" / "stream_state.json").read_text())["completed"] == 1


def test_too_little_disk_space_stops_before_the_task(make_cfg, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from sapt_lightning.errors import DataError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(DataError, match=r"not enough disk space .* task 1 \(reverse\)"):
        run(make_cfg(*SMOKE))


def test_method_on_unsupported_tasks_or_pet_stops_before_any_model(make_cfg, tmp_path):
    from sapt_lightning.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"method=epi .*classification tasks only.*reverse, first_word.*long_sequence"
    ):
        run(make_cfg(*SMOKE, "method=epi"))
    assert not (tmp_path / "run" / "config.json").exists(), "a refused run records nothing"
    with pytest.raises(ConfigError, match=r"method=l2p does not support pet=lora; it supports pet=prompt"):
        run(make_cfg(*SMOKE, "method=l2p", "pet=lora"))


def run_and_reload(cfg, run_dir):
    """Run a stream, then rebuild its method from the saved artifacts: (module, tasks, datamodule)."""
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.benchmarks import build_tasks
    from sapt_lightning.data.datamodule import ContinualDataModule
    from sapt_lightning.methods.registry import build_method

    run(cfg)
    tasks = build_tasks(cfg)
    backbone = load_backbone(cfg.backbone, Path(cfg.paths.cache_dir))
    module = build_method(cfg, backbone)
    for i, task in enumerate(tasks):
        module.load_task(i, task, run_dir / "tasks" / f"{i + 1}-{task.name}")
    return module, tasks, ContinualDataModule.from_config(cfg, tasks, backbone)


def test_no_sa_learns_each_block_alone_and_selects_one(make_cfg, tmp_path):
    """-SA: training task 2 uses only block 2 (block 1's weight is exactly 0); test routing is one-hot."""
    module, tasks, data = run_and_reload(make_cfg(*SMOKE, "ablation=no_sa"), tmp_path / "run")
    batch = next(iter(data.loader(tasks[0], tasks[0].test[:8])))
    learn = module.learning_weights(batch)
    assert learn[:, 0].eq(0).all() and learn[:, 1].eq(1).all()
    select = module.selection_weights(batch)
    assert select.sum(dim=-1).eq(1).all() and select.max(dim=-1).values.eq(1).all()


def test_epi_selects_each_tasks_prompt_whatever_the_training_mode(make_cfg, tmp_path):
    """EPI routes test inputs to their own task's prompt by class statistics; generation
    must select even when called while the module is in training mode (as the loop does)."""
    module, tasks, data = run_and_reload(make_cfg(*SMOKE, "method=epi", *CLASSIFICATION_STREAM), tmp_path / "run")
    for i, task in enumerate(tasks):
        batch = next(iter(data.loader(task, task.test[:16])))
        assert module.task_of(batch, selecting=True).eq(i).float().mean() >= 0.9, task.name
        module.train()
        in_training_mode = module.generate_texts(batch)
        module.eval()
        assert module.generate_texts(batch) == in_training_mode


def test_lfpt5_pseudo_rows_survive_target_truncation():
    """LFPT5 writes `<output> __ans__ <input>`: cutting a long input keeps the marker and the output."""
    from sapt_lightning.data.task import Example
    from sapt_lightning.methods.baselines.lfpt5 import generation_row, parse_pseudo

    long_input = " ".join(f"word{i}" for i in range(200))
    row = generation_row(Example("Say the sentiment.", long_input, ("positive",)))
    cut = row.target[:60]  # what a 50-token target limit leaves, roughly
    parsed = parse_pseudo("Say the sentiment.", cut)
    assert parsed is not None and parsed.target == "positive" and long_input.startswith(parsed.input)
    assert parse_pseudo("d", "no marker here") is None


def test_resume_protects_a_finished_run_and_frees_an_unstarted_one(make_cfg, tmp_path):
    """resume=force continues an unfinished run only: on a finished one it would train nothing and
    relabel its results with a config that did not make them. A directory where no task finished
    holds nothing to protect: a corrected command simply runs there."""
    from sapt_lightning.errors import ConfigError
    from sapt_lightning.run import check_resume

    started = tmp_path / "started"
    started.mkdir()
    check_resume(make_cfg(*SMOKE, "seed=7", run_dir=started), started)  # recorded, then it failed before task 1
    assert run(make_cfg(*SMOKE, run_dir=started))["seed"] == 42

    finished = tmp_path / "finished"
    run(make_cfg(*SMOKE, run_dir=finished))
    before = {name: (finished / name).read_bytes() for name in ("results.json", "config.json")}
    with pytest.raises(ConfigError, match=r"finished run \(2/2 tasks\) of another config \(seed: 42 -> 7\)"):
        run(make_cfg(*SMOKE, "seed=7", "resume=force", run_dir=finished))
    assert before == {name: (finished / name).read_bytes() for name in before}
    # From the command line the refusal comes before Hydra records the command in the directory.
    hydra_files = finished / ".hydra"
    hydra_files.mkdir()
    (hydra_files / "overrides.yaml").write_text("- debug=smoke\n")
    with pytest.raises(SystemExit) as exit_:
        precheck_run_dir([*SMOKE, "seed=7", f"hydra.run.dir={finished}"])
    assert exit_.value.code == 2 and [p.name for p in hydra_files.iterdir()] == ["overrides.yaml"]
    assert (hydra_files / "overrides.yaml").read_text() == "- debug=smoke\n"


def test_one_process_per_run_directory(tmp_path, capsys):
    """A live holder refuses every other run of its directory in one line; a holder killed with
    -9 leaves nothing that stops the next run."""
    from sapt_lightning.errors import ConfigError
    from sapt_lightning.utils import run_lock

    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = rf"^{tmp_path} is in use by another run \(pid {holder.pid}\); wait"
        with pytest.raises(ConfigError, match=refused), run_lock.hold(tmp_path):
            pass
        with pytest.raises(SystemExit):
            precheck_run_dir([*SMOKE, f"hydra.run.dir={tmp_path}"])
        assert capsys.readouterr().err.count("\n") == 1 and [p.name for p in tmp_path.iterdir()] == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    assert run_lock.holder(tmp_path) is None
    with run_lock.hold(tmp_path):
        assert run_lock.holder(tmp_path) == str(os.getpid())


HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from sapt_lightning.utils import run_lock
with run_lock.hold(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_adafactor_trains_sapt_prompt_at_its_learning_rates(make_cfg, cache_dir):
    """trainer.optimizer=adafactor (the paper's optimizer for SAPT-Prompt): constant per-group
    learning rates, and a step moves the task's prompt."""
    from transformers.optimization import Adafactor

    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.collate import Collator
    from sapt_lightning.data.synthetic import build_synthetic_task
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg(*SMOKE, "pet=prompt", "trainer.optimizer=adafactor", "method.sapt.attn_lr=0.01")
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    task = build_synthetic_task("reverse", 0, 8, 1, 1)
    module.start_task(0, task)
    module.train()
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, Adafactor) and [g["lr"] for g in optimizer.param_groups] == [0.03, 0.01, 0.03]
    prompt = module.prompts.prompts[-1].detach().clone()
    module.task_loss(Collator(module.tokenizer, "t5", "synthetic", 64, 16)(task.train)).backward()
    optimizer.step()
    assert not torch.equal(prompt, module.prompts.prompts[-1])


@pytest.mark.parametrize(
    "overrides, lrs",
    [
        (["method=l2p"], [0.03]),
        (["method=l2p", "method.lr=0.1"], [0.1]),
        (["method=lfpt5", "pet.lr=0.2"], [0.2]),
        (["method=seq_lora", "method.lr=0.004"], [0.004]),
        (["pet=prompt"], [0.03, 0.003, 0.03]),
        (["pet=prompt", "method.lr=0.05", "pet.lr=0.2"], [0.2, 0.003, 0.03]),
        (["pet=lora"], [0.001, 0.003, 0.03]),
        (["pet=lora", "method.lr=0.002", "method.sapt.key_lr=null"], [0.002, 0.003, 0.002]),
    ],
)
def test_the_optimizer_trains_at_the_configured_learning_rates(make_cfg, cache_dir, overrides, lrs):
    """method.lr is the learning rate of every method, prompt-only baselines included; pet.lr, when
    set, wins for the PET parameters (null by default, so it never silently beats method.lr);
    SAPT's query and key take method.sapt.attn_lr and key_lr."""
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.synthetic import build_synthetic_task
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg(*SMOKE, *overrides)
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    module.start_task(0, build_synthetic_task("reverse", 0, 8, 1, 1))
    optimizer = module.configure_optimizers()
    assert [g["lr"] for g in optimizer.param_groups if g["params"]] == lrs


def test_lr_after_first_trains_the_later_tasks_at_their_own_rate(make_cfg, cache_dir):
    """method.lr_after_first (O-LoRA's LLaMA script: 1e-3 for the first task, 1e-4 after): each task's
    optimizer is made after its start_task, at that task's rate. A joint fit (mtl) and a fresh model
    per task (single, whose scores become the FWT reference) keep method.lr."""
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.synthetic import build_synthetic_task
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg(*SMOKE, "method=olora", "method.lr=0.001", "method.lr_after_first=0.0001")
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    rates = []
    for index, name in enumerate(("reverse", "first_word", "repeat")):
        module.start_task(index, build_synthetic_task(name, index, 8, 1, 1))
        rates.append([g["lr"] for g in module.configure_optimizers().param_groups if g["params"]])
    assert rates == [[0.001], [0.0001], [0.0001]]
    for method in ("mtl", "single"):
        cfg = make_cfg(*SMOKE, f"method={method}", "method.lr=0.001", "method.lr_after_first=0.0001")
        module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
        module.start_task(2, build_synthetic_task("repeat", 2, 8, 1, 1))
        assert [g["lr"] for g in module.configure_optimizers().param_groups if g["params"]] == [0.001], method


@pytest.mark.parametrize("overrides", [["strategy=cpu"], ["experiment=superni_order1", "strategy=cpu"]])
def test_resume_accepts_a_record_made_before_a_key_that_is_null(overrides):
    """A key added later at null (its off value, as method.lr_after_first) is no difference from a
    run recorded without it, also where a preset sets it by an interpolation that resolves to null;
    a key added with a value still is."""
    from conftest import compose_cfg
    from omegaconf import OmegaConf

    from sapt_lightning.run import _diff

    cfg = compose_cfg(overrides)
    now = OmegaConf.to_container(cfg, resolve=False)
    recorded = OmegaConf.to_container(cfg, resolve=False)
    del recorded["method"]["lr_after_first"]
    assert _diff(recorded, now, now=cfg) == []
    cfg.method.lr_after_first = 0.0001
    assert _diff(recorded, OmegaConf.to_container(cfg, resolve=False), now=cfg) == [
        "method.lr_after_first: '<unset>' -> 0.0001"
    ]


def test_olora_trains_a_task_for_its_own_epochs(make_cfg, monkeypatch, caplog, tmp_path):
    """method.per_task.<task>.epochs is that task's trainer.max_epochs where epochs are the budget
    (O-LoRA's Long script: MNLI 2). Under a step budget every task trains the same steps, and the
    log says the per-task epochs do not apply (a cap there would cut the task short)."""
    import sapt_lightning.run as run_module

    budgets, make_trainer = [], run_module.make_trainer

    def recording(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        budgets.append((trainer.max_epochs, trainer.max_steps))
        return trainer

    monkeypatch.setattr(run_module, "make_trainer", recording)
    per_task = "method.per_task={first_word: {epochs: 3}}"
    run(make_cfg(*SMOKE, "method=olora", "trainer.max_steps=-1", "trainer.max_epochs=1", per_task))
    assert budgets == [(1, -1), (3, -1)]  # the smoke stream: reverse, then first_word

    budgets.clear()
    run(make_cfg(*SMOKE, "method=olora", "trainer.max_steps=4", per_task, run_dir=tmp_path / "steps"))
    assert budgets == [(-1, 4), (-1, 4)]
    assert "method.per_task.first_word.epochs applies where epochs are the budget" in caplog.text


@pytest.mark.parametrize("fidelity", ["clean", "official"])
def test_llama_replay_kl_pools_what_the_fidelity_says(make_cfg, cache_dir, fidelity):
    """Official: the release's LLaMA replay KL pools the replay rows' input_ids, prompt + answer +
    EOS (left-padded with BOS, unmasked); clean routes a pseudo input by its prompt, as everywhere."""
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.datamodule import ContinualDataModule
    from sapt_lightning.data.synthetic import build_synthetic_task
    from sapt_lightning.data.task import Example, render_prompt
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg(*SMOKE, "backbone=tiny_llama", f"fidelity={fidelity}")
    backbone = load_backbone(cfg.backbone, cache_dir)
    module = build_method(cfg, backbone)
    task = build_synthetic_task("reverse", 0, 8, 1, 1)
    data = ContinualDataModule.from_config(cfg, [task], backbone)
    definition = task.train[0].definition
    pseudo = [Example(definition, "one two three four", ("",)), Example(definition, "five", ("five",))]
    batch = next(iter(data.loader(task, pseudo, with_labels=module.replay_pools_answer, batch_size=2)))
    rows = module.replay_pool_rows(batch)
    tok = module.tokenizer
    pad = tok.bos_token_id if tok.bos_token_id is not None else tok.pad_token_id  # (the tiny tokenizer has no BOS)
    for i, ex in enumerate(pseudo):
        prompt = tok(render_prompt(ex, task.template), add_special_tokens=False).input_ids
        real = rows["pool_mask"][i].bool()
        expected = prompt + tok(ex.target, add_special_tokens=False).input_ids + [tok.eos_token_id]
        assert rows["pool_ids"][i][real].tolist() == (expected if fidelity == "official" else prompt)
        assert (rows["pool_ids"][i][~real] == pad).all()
    assert not module.mask_padding if fidelity == "official" else module.mask_padding


def test_official_reads_llama_predictions_after_the_last_output_marker(make_cfg, cache_dir):
    """fidelity=official reads a decoder-only prediction as the release does: after the last
    "Output:" of prompt + answer, and "" when truncation cut "Output:" off the prompt."""
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.collate import Collator
    from sapt_lightning.data.synthetic import build_synthetic_task
    from sapt_lightning.methods.base import after_last_output
    from sapt_lightning.methods.registry import build_method

    assert after_last_output("Definition: x\nInput: a\nOutput: b c") == "b c"
    assert after_last_output("Input: Output: a\nOutput: b") == "b" and after_last_output("Input: a b") == ""
    cfg = make_cfg(*SMOKE, "backbone=tiny_llama", "method=seq_lora", "fidelity=official")
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    module.start_task(0, task := build_synthetic_task("reverse", 0, 4, 1, 1))
    cut = Collator(module.tokenizer, "llama", "synthetic", 4, 8, with_labels=False)(task.train)  # "Output:" cut off
    assert module.generate_texts(cut) == [""] * len(task.train)


def test_olora_takes_each_tasks_lambdas_from_per_task(make_cfg, monkeypatch):
    """method.per_task: O-LoRA's Long script sets λ1 (and λ2) per task; the others keep method's."""
    from sapt_lightning.methods.baselines import olora

    used = []
    original = olora.task_lambdas
    monkeypatch.setattr(
        olora, "task_lambdas", lambda method, task: used.append((task, original(method, task))) or used[-1][1]
    )
    run(
        make_cfg(
            *SMOKE,
            "method=olora",
            *CLASSIFICATION_STREAM,
            "method.lambda_orth=5",
            "method.per_task={sentiment: {lambda_orth: 0.25, lambda_l2: 0.1}}",
        )
    )
    assert used == [("topic", (5.0, 0.0)), ("sentiment", (0.25, 0.1))]
