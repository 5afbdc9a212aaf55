"""Importing the authors' release checkpoints: same logits as the native model, and
clear refusals (unsafe pickles, missing tensors, mismatched streams)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sapt_lightning.backbones import load_backbone
from sapt_lightning.data.io import write_task_json
from sapt_lightning.data.task import Example, Task
from sapt_lightning.errors import DataError
from sapt_lightning.interop.release import (
    ATTENTION_FILE,
    KEYS_FILE,
    LORA_A_FILE,
    LORA_B_FILE,
    QUERY_FILE,
    adapted_layers,
    import_release_run,
    load_attention_weights,
    release_lora_name,
)
from sapt_lightning.methods.sapt.module import SAPTModule
from sapt_lightning.pet.lora import lora_layers

NAMES = ["reverse", "first_word", "sentiment"]


def build_module(make_cfg) -> SAPTModule:
    # no_arm: load_task then needs no pseudo samples, which the release keeps elsewhere; max pooling is
    # the release's router input, as an imported run has it.
    cfg = make_cfg("debug=smoke", "logger=csv", "ablation=no_arm", "method.sapt.pooling=max")
    return SAPTModule(load_backbone(cfg.backbone, Path(cfg.paths.cache_dir)), cfg)


def fill_stream(module: SAPTModule, n: int) -> list[dict[str, torch.Tensor]]:
    """n 'trained' tasks: non-zero B, a query network that moves after each task, ARM
    targets. Returns each task's block_state as it was when the task ended."""
    g = torch.Generator().manual_seed(3)
    snapshots = []
    for i in range(n):
        module.add_task_block()
        with torch.no_grad():
            for _, layer in lora_layers(module.model):
                layer.lora_B[-1].normal_(0.0, 0.5, generator=g)  # B = 0 would hide a wrong block
            for p in module.attention.query.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        module.targets.append(torch.randn(i + 1, generator=g).softmax(0))
        snapshots.append({k: v.clone() for k, v in module.block_state(i).items()})
    return snapshots


def export_release(snapshots: list[dict[str, torch.Tensor]], targets: list[torch.Tensor], root: Path) -> list[Path]:
    """Write the release's layout (docs/method.md §2.6), as its run_t5.py would: newest-first
    keys and targets, LoRA files that also carry copies of earlier blocks."""
    layers = [k[: -len(".lora_A")] for k in snapshots[0] if k.endswith(".lora_A")]
    folders = []
    for i, snap in enumerate(snapshots):
        folder = root / f"{i + 1}-{NAMES[i]}" / "saved_weights"
        folder.mkdir(parents=True)
        for part, filename in (("A", LORA_A_FILE), ("B", LORA_B_FILE)):
            state = {release_lora_name(layer, part): snap[f"{layer}.lora_{part}"] for layer in layers}
            for slot, j in enumerate(reversed(range(i))):  # previous_lora_weights_*[0] = task i-1
                for layer in layers:
                    parent, _, proj = layer.rpartition(".")
                    state[f"{parent}.previous_lora_weights_{proj}.{slot}.lora_{part}"] = snapshots[j][
                        f"{layer}.lora_{part}"
                    ]
            torch.save(state, folder / filename)
        torch.save(
            {
                "0.weight": snap["query.down.weight"],
                "1.weight": snap["query.up.weight"],
                "3.weight": snap["query.norm.weight"],
                "3.bias": snap["query.norm.bias"],
            },
            folder / QUERY_FILE,
        )
        torch.save(torch.stack([snapshots[j]["key"] for j in reversed(range(i + 1))]), folder / KEYS_FILE)
        with open(folder / ATTENTION_FILE, "wb") as fh:
            pickle.dump(targets[i].flip(0).numpy().astype(np.float32), fh)
        folders.append(folder.parent)
    return folders


def batch(module: SAPTModule) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, len(module.tokenizer), (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[3, 5:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = torch.randint(3, len(module.tokenizer), (4, 6), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pool_ids": ids, "pool_mask": mask}


@torch.no_grad()
def logits(module: SAPTModule, b: dict[str, torch.Tensor]) -> torch.Tensor:
    module.eval()
    return module.model(**module.backbone_inputs(b)).logits


@pytest.fixture
def release(make_cfg, tmp_path):
    native = build_module(make_cfg)
    snapshots = fill_stream(native, len(NAMES))
    folders = export_release(snapshots, native.targets, tmp_path / "release")
    return native, folders


def test_imported_release_gives_the_native_logits(make_cfg, tmp_path, release):
    native, folders = release
    layers = adapted_layers(native.model, native.target_modules)
    assert any(".EncDecAttention." in name for name in layers)  # cross-attention q and v are covered
    task_dirs = import_release_run(folders, tmp_path / "imported", layers, hidden_size=native.attention.d)
    assert [d.name for d in task_dirs] == [f"{i + 1}-{n}" for i, n in enumerate(NAMES)]

    fresh = build_module(make_cfg)
    for i, (name, folder) in enumerate(zip(NAMES, task_dirs)):
        fresh.load_task(i, Task(name, "exact_match", "synthetic", [], [], []), folder)
    b = batch(native)
    expected = logits(native, b)
    assert torch.allclose(logits(fresh, b), expected, atol=1e-6)
    # Task order restored: keys, and ARM targets (the release stores both newest first).
    assert all(torch.equal(a, k) for a, k in zip(fresh.attention.keys, native.attention.keys))
    assert all(torch.allclose(a, t) for a, t in zip(fresh.targets, native.targets))
    # The blocks matter: without them the logits differ.
    fresh.mixing.weights = None
    with torch.no_grad():
        plain = fresh.model(**{k: b[k] for k in ("input_ids", "attention_mask", "labels")}).logits
    assert not torch.allclose(plain, expected, atol=1e-3)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_with_code_is_refused_without_running_it(tmp_path, release):
    native, folders = release
    marker = tmp_path / "pwned"
    path = folders[1] / "saved_weights" / ATTENTION_FILE
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(DataError, match=rf"{ATTENTION_FILE}.*refused"):
        load_attention_weights(path)
    with pytest.raises(DataError, match=ATTENTION_FILE):
        import_release_run(folders, tmp_path / "out", adapted_layers(native.model, native.target_modules))
    assert not marker.exists()
    # A plain array pickle of any protocol loads.
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path.write_bytes(pickle.dumps(np.array([0.25, 0.75], dtype=np.float32), protocol=protocol))
        assert load_attention_weights(path).tolist() == [0.25, 0.75]


def test_tensor_file_with_code_is_refused(tmp_path, release):
    native, folders = release
    marker = tmp_path / "pwned"
    path = folders[0] / "saved_weights" / QUERY_FILE
    torch.save({"0.weight": _RunsCode(marker)}, path)
    with pytest.raises(DataError, match=rf"{QUERY_FILE}.*weights_only"):
        import_release_run(folders, tmp_path / "out", adapted_layers(native.model, native.target_modules))
    assert not marker.exists()


def test_missing_tensor_names_the_file_and_tensor(tmp_path, release):
    native, folders = release
    layers = adapted_layers(native.model, native.target_modules)
    path = folders[2] / "saved_weights" / LORA_B_FILE
    state = torch.load(path, weights_only=True)
    dropped = release_lora_name(sorted(layers)[0], "B")
    del state[dropped]
    torch.save(state, path)
    with pytest.raises(DataError, match=rf"{LORA_B_FILE}: missing 1 of .*{dropped}"):
        import_release_run(folders, tmp_path / "out", layers)


def test_mismatched_streams_are_refused(tmp_path, release):
    native, folders = release
    layers = adapted_layers(native.model, native.target_modules)
    out = tmp_path / "out"
    # A task missing from the stream: folder numbers give it away...
    with pytest.raises(DataError, match="folder of task 3, given as task 2"):
        import_release_run([folders[0], folders[2]], out, layers)
    # ...and so do the key and target counts when names are given explicitly.
    with pytest.raises(DataError, match=rf"{KEYS_FILE}: 3 keys, but this is task 2"):
        import_release_run([folders[0], folders[2]], out, layers, task_names=["a", "b"])
    # Another hidden size d.
    wider = {name: (out_f, in_f + 8) for name, (out_f, in_f) in layers.items()}
    with pytest.raises(DataError, match=rf"{LORA_A_FILE}: tensor .* has shape .*hidden size d"):
        import_release_run(folders, out, wider)
    with pytest.raises(DataError, match=rf"{KEYS_FILE}: keys of size d=\d+, the model has hidden size 7"):
        import_release_run(folders, out, layers, hidden_size=7)
    # Folders from different runs: an earlier task's key no longer matches its later copies.
    keys_path = folders[0] / "saved_weights" / KEYS_FILE
    torch.save(torch.load(keys_path, weights_only=True) + 1.0, keys_path)
    with pytest.raises(DataError, match="keys differ"):
        import_release_run(folders, out, layers)
    assert not (out / "tasks").exists()  # nothing written before every check passed


def _import_overrides(cfg, *extra: str) -> list[str]:
    """The test's cache and data, as a user's command line gives them; few test instances."""
    return [
        f"paths.cache_dir={cfg.paths.cache_dir}",
        f"paths.data_dir={cfg.paths.data_dir}",
        "debug=smoke",
        "benchmark.test_per_task=20",
        *extra,
    ]


def test_import_command_makes_a_run_that_evaluates_to_the_fixture_model(make_cfg, tmp_path, release, capsys):
    """The command on a release directory (the last task without its attention pickle, which the
    release never reads): the run directory scores as the fixture's model does, via sapt-evaluate."""
    from sapt_lightning.cl.loop import ContinualLoop
    from sapt_lightning.data.benchmarks import build_tasks
    from sapt_lightning.data.datamodule import ContinualDataModule
    from sapt_lightning.evaluate import evaluate_run
    from sapt_lightning.import_release import main as import_main

    native, folders = release
    (folders[-1] / "saved_weights" / ATTENTION_FILE).unlink()
    cfg = make_cfg(
        "debug=smoke", "benchmark.num_tasks=null", "benchmark.test_per_task=20", f"benchmark.tasks=[{','.join(NAMES)}]"
    )
    tasks = build_tasks(cfg)
    loop = ContinualLoop(cfg, native, ContinualDataModule.from_config(cfg, tasks, _backbone(cfg)), tmp_path, None)
    expected = [loop.evaluate(t) for t in tasks]

    run_dir = tmp_path / "imported"
    overrides = _import_overrides(cfg, "benchmark.num_tasks=null", "fidelity=clean", "ablation=no_arm")
    import_main([f"release_dir={folders[0].parent}", f"run_dir={run_dir}", *overrides])
    out = capsys.readouterr().out
    assert f"imported 3 release tasks into {run_dir}" in out and "sapt-evaluate" in out
    results = evaluate_run(run_dir)
    assert results["row"] == pytest.approx(expected) and results["matches_recorded"] is True
    state = json.loads((run_dir / "stream_state.json").read_text())
    assert state["completed"] == 3 and [len([v for v in row if v is not None]) for row in state["matrix"]] == [1, 2, 3]
    measured = json.loads((run_dir / "tasks" / "3-sentiment" / "arm_target.json").read_text())["target"]
    assert len(measured) == 3 and sum(measured) == pytest.approx(1.0)


def test_imported_run_continues_the_stream_with_its_next_tasks(make_cfg, tmp_path, release, capsys):
    """Two release tasks with their pseudo samples, imported as the start of a three-task stream:
    the printed command trains the third task with ARM on the imported tasks' pseudo samples."""
    from sapt_lightning.import_release import import_release
    from sapt_lightning.run import run

    _, folders = release
    shutil.rmtree(folders[2])
    pseudo = tmp_path / "generated_data" / "Synthetic"
    for name in NAMES[:2]:
        write_task_json(pseudo / name / "train.json", [Example("Given instruction.", f"a {name} input", ("",))])
    cfg = make_cfg("debug=smoke")
    stream = f"benchmark.tasks=[{','.join(NAMES)}]"
    run_dir = tmp_path / "imported"
    result = import_release(
        folders[0].parent, run_dir, _import_overrides(cfg, "benchmark.num_tasks=null", stream), pseudo.parent
    )
    assert result["continue_command"].startswith("sapt ") and f"hydra.run.dir={run_dir}" in result["continue_command"]
    assert (run_dir / "tasks" / "2-first_word" / "pseudo" / "train.json").is_file()
    continued = make_cfg(
        "benchmark.num_tasks=null",
        stream,
        *[o for o in result["overrides"] if not o.startswith("paths.")],
        run_dir=run_dir,
    )
    results = run(continued)
    assert len(results["matrix"]) == 3 and results["summary"]["f_ra"] is not None
    assert results["matrix"][:2] == result["matrix"]  # the imported rows, as scored at import
    assert "a reverse input" in json.dumps(results["pseudo_examples"])  # ARM replayed the release's samples


def _drop_task(folders: list[Path]) -> None:
    shutil.rmtree(folders[1])


def _widen_rank(folders: list[Path]) -> None:
    """Task 2's blocks one rank wider than task 1's."""
    for filename, dim in ((LORA_A_FILE, 0), (LORA_B_FILE, 1)):
        path = folders[1] / "saved_weights" / filename
        state = torch.load(path, weights_only=True)
        torch.save({k: torch.cat([v, v.narrow(dim, 0, 1)], dim) for k, v in state.items()}, path)


def _tamper_pickle(folders: list[Path]) -> None:
    (folders[0] / "saved_weights" / ATTENTION_FILE).write_bytes(pickle.dumps(_RunsCode(folders[0] / "pwned")))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_drop_task, r"no folder 2-<task>/saved_weights between the tasks 1\.\.3"),
        (_widen_rank, r"2-first_word/saved_weights/lora_weights_A.pt: LoRA rank 9, but .*1-reverse.* has 8"),
        (_tamper_pickle, r"1-reverse/saved_weights/attention_weights.pkl: not a plain numpy array pickle"),
    ],
    ids=["missing task", "another rank", "tampered pickle"],
)
def test_import_refuses_a_damaged_release_in_one_line_and_writes_nothing(
    make_cfg, tmp_path, release, capsys, damage, message
):
    from sapt_lightning.import_release import main as import_main

    _, folders = release
    damage(folders)
    cfg = make_cfg("debug=smoke")
    run_dir = tmp_path / "imported"
    with pytest.raises(SystemExit) as exit_info:
        import_main(
            [
                f"release_dir={folders[0].parent}",
                f"run_dir={run_dir}",
                *_import_overrides(cfg, "benchmark.num_tasks=null"),
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert re.search(message, err), err
    assert not run_dir.exists() and not list(tmp_path.glob(".imported*"))
    assert not (folders[0] / "pwned").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["benchmark.tasks=[first_word,reverse,sentiment]"], r"are not the first tasks of this config's stream"),
        (["method=seq_lora"], r"^error: method: the release trains method=sapt; drop the method= override$"),
        (["pet.r=4"], r"^error: pet.r=4, but the release's files hold 8$"),
        (["occupied"], r"exists and is not empty; give a new directory"),
    ],
    ids=["another order", "another method", "another rank", "occupied run_dir"],
)
def test_import_refuses_a_config_that_does_not_fit_the_release(make_cfg, tmp_path, release, capsys, extra, message):
    from sapt_lightning.import_release import main as import_main

    _, folders = release
    run_dir = tmp_path / "imported"
    if extra == ["occupied"]:
        (run_dir / "notes").mkdir(parents=True)
        extra = []
    args = _import_overrides(make_cfg("debug=smoke"), "benchmark.num_tasks=null", *extra)
    with pytest.raises(SystemExit) as exit_info:
        import_main([f"release_dir={folders[0].parent}", f"run_dir={run_dir}", *args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and re.search(message, err), err
    assert not list(tmp_path.glob(".imported*")) and not (run_dir / "config.json").exists()


def test_an_import_that_fails_midway_leaves_nothing(make_cfg, tmp_path, release, monkeypatch, capsys):
    """A failure after the staging folder holds artifacts (here: scoring) removes it all."""
    from sapt_lightning.cl.loop import ContinualLoop
    from sapt_lightning.import_release import main as import_main

    def fail(self, task, split="test"):
        assert any((tmp_path).glob(".imported.importing-*/tasks/1-reverse/sapt_block.safetensors"))
        raise DataError(f"cannot score {task.name}")

    monkeypatch.setattr(ContinualLoop, "evaluate", fail)
    _, folders = release
    run_dir = tmp_path / "imported"
    args = _import_overrides(make_cfg("debug=smoke"), "benchmark.num_tasks=null")
    with pytest.raises(SystemExit):
        import_main([f"release_dir={folders[0].parent}", f"run_dir={run_dir}", *args])
    assert capsys.readouterr().err.strip() == "error: cannot score reverse"
    assert not run_dir.exists() and not list(tmp_path.glob(".imported*"))


def _backbone(cfg):
    return load_backbone(cfg.backbone, Path(cfg.paths.cache_dir))
