"""A run killed (SIGKILL, separate process) at any point resumes to the same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import DATA_DIR, ROOT

ARGS = [
    "debug=smoke",
    "logger=csv",
    "benchmark.num_tasks=3",
    "trainer.max_steps=8",
    "backbone.tiny.pretrain_steps=50",
    "method.generator.steps=10",
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


@pytest.mark.parametrize("fault", ["mid_task:2", "after_artifacts:2", "during_eval:3"])
def test_killed_run_resumes_to_identical_results(reference, tmp_path, fault):
    cache, expected, expected_files = reference
    killed = run_cli(tmp_path, cache, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "results.json").exists()
    resumed = run_cli(tmp_path, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already complete" in resumed.stderr + resumed.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["matrix"] == expected["matrix"]
    assert results["attention"] == expected["attention"]
    assert artifacts(tmp_path) == expected_files


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
