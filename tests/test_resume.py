"""A run killed (SIGKILL, separate process) at any point, or stopped by SIGTERM, resumes to the
same results and artifacts, byte for byte; inside a task, from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import DATA_DIR, ROOT

ARGS = [
    "debug=smoke",
    "logger=csv",
    "benchmark.num_tasks=3",
    "trainer.max_steps=8",
    "backbone.tiny.pretrain_steps=50",
    "method.generator.steps=10",
    "trainer.checkpoint_every_n_steps=3",  # lands inside the tasks' 8 steps and the generators' 10
    "pet.dropout=0.1",  # dropout draws: a resume must restore the random streams too
    "method.generator.dropout=0.1",
]


def run_cli(run_dir, cache, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "SAPT_DATA_DIR": str(DATA_DIR), "SAPT_CACHE_DIR": str(cache)}
    env.pop("SAPT_FAULT", None)
    if fault:
        env["SAPT_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "sapt_lightning", *ARGS, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def artifacts(run_dir) -> dict[str, bytes]:
    """Every per-task file (blocks, targets, pseudo samples), byte for byte."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "tasks").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    run_dir = tmp_path_factory.mktemp("reference")
    proc = run_cli(run_dir, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cache, json.loads((run_dir / "results.json").read_text()), artifacts(run_dir)


@pytest.mark.parametrize(
    "fault, resumes_at",
    [
        ("mid_task:2", "task 2/3 (first_word): resuming its training at step 3"),
        ("mid_generator:2", "task 2/3 (first_word): resuming its generator's training at step 3"),
        ("after_artifacts:2", None),
        ("during_eval:3", None),
    ],
)
def test_killed_run_resumes_to_identical_results(reference, tmp_path, fault, resumes_at):
    cache, expected, expected_files = reference
    killed = run_cli(tmp_path, cache, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "results.json").exists()
    resumed = run_cli(tmp_path, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already complete" in resumed.stderr + resumed.stdout
    if resumes_at:
        assert resumes_at in resumed.stderr + resumed.stdout
    assert_same_run(tmp_path, expected, expected_files)


def assert_same_run(run_dir, expected, expected_files) -> None:
    """results.json the same in every field but the wall times; every task artifact byte for byte."""
    results = json.loads((run_dir / "results.json").read_text())
    assert results.pop("wall_s") > 0
    assert results.pop("phases_s").keys() == expected["phases_s"].keys()
    assert results == {k: v for k, v in expected.items() if k not in ("wall_s", "phases_s")}
    assert artifacts(run_dir) == expected_files
    assert not (run_dir / "checkpoints").exists()  # gone with the tasks that finished


def test_sigterm_saves_the_task_and_exits_for_a_requeue(reference, tmp_path):
    """The notice a cluster sends before preemption: the job saves its training at the next step
    boundary and exits 143 (ended by SIGTERM), and the same command goes on from that step."""
    cache, expected, expected_files = reference
    stopped = run_cli(tmp_path, cache, "mid_task:2:TERM")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "stopped: received SIGTERM: task 2/3 (first_word): training saved at step 5" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert (tmp_path / "checkpoints" / "2-first_word" / "fit.ckpt").is_file()
    resumed = run_cli(tmp_path, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "task 2/3 (first_word): resuming its training at step 5" in resumed.stderr + resumed.stdout
    assert_same_run(tmp_path, expected, expected_files)


def test_the_training_loader_resumes_at_any_batch_of_any_pass():
    """Stopped after any batch of any pass (the last one included), a new loader given the old
    one's state yields exactly the batches the old one would have yielded next."""
    from sapt_lightning.data.datamodule import ResumableLoader

    def loader() -> ResumableLoader:
        return ResumableLoader(list(range(10)), batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(5))

    def passes(source: ResumableLoader, n: int) -> list[list[int]]:
        return [b.tolist() for _ in range(n) for b in source]

    whole = passes(loader(), 3)  # 4 batches a pass, the last one partial
    for stop in range(1, 9):
        first, seen = loader(), []
        batches, k = iter(first), 0
        while len(seen) < stop:
            batch = next(batches, None)
            if batch is None:  # the next pass
                batches, k = iter(first), 0
                continue
            seen.append(batch.tolist())
            k += 1
            first.consumed = k  # as InTaskCheckpoint sets it after each trained batch
        resumed = loader()
        resumed.load_state_dict(first.state_dict())
        assert seen + passes(resumed, 3)[: len(whole) - stop] == whole, stop


def test_a_damaged_checkpoint_is_named(make_cfg, tmp_path):
    from sapt_lightning.errors import DataError
    from sapt_lightning.run import run

    damaged = tmp_path / "a" / "checkpoints" / "1-reverse" / "fit.ckpt"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError) as err:
        run(make_cfg("debug=smoke", "logger=csv", run_dir=tmp_path / "a"))
    assert str(damaged) in str(err.value) and "delete it" in str(err.value) and "\n" not in str(err.value)


def test_a_write_that_fails_halfway_leaves_the_old_file(tmp_path, monkeypatch):
    """A full disk mid-write (simulated): the previous version survives, no temp file is left."""
    from sapt_lightning.utils import io

    target = tmp_path / "state.json"
    io.atomic_write_json(target, {"completed": 1})

    def half_then_fail(path, obj):
        def write(tmp):
            with open(tmp, "w") as fh:
                fh.write('{"completed": ')
                raise OSError(28, "No space left on device")

        io.atomic_write(path, write)

    with pytest.raises(OSError, match="No space left"):
        half_then_fail(target, {"completed": 2})
    assert json.loads(target.read_text()) == {"completed": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize("damage", ["truncate_block", "garble_target", "garble_state"])
def test_corrupt_artifacts_are_refused_with_the_file_named(make_cfg, tmp_path, damage):
    from sapt_lightning.errors import DataError
    from sapt_lightning.run import run

    run(make_cfg("debug=smoke", "logger=csv", run_dir=tmp_path / "a"))
    task = tmp_path / "a" / "tasks" / "1-reverse"
    path = {
        "truncate_block": task / "sapt_block.safetensors",
        "garble_target": task / "arm_target.json",
        "garble_state": tmp_path / "a" / "stream_state.json",
    }[damage]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        run(make_cfg("debug=smoke", "logger=csv", run_dir=tmp_path / "a"))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
