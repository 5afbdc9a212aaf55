"""GPU paths (`make test-gpu`; skipped where no CUDA GPU is visible, so never in CI).

What only a GPU can show: the fused mixing on CUDA kernels and under bf16 autocast, the
per-task loop with Lightning's `bf16-mixed` on one GPU (artifacts written there reload and
give the same predictions), every method's device placement between tasks, and the
stream under DeepSpeed ZeRO-2 (Lightning's DeepSpeedStrategy, one GPU).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import DATA_DIR, ROOT
from safetensors.torch import load_file
from test_pet import check_bf16_tracks_fp32, mixed_loss_and_grads

from sapt_lightning.evaluate import evaluate_run
from sapt_lightning.run import run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SMOKE = ["debug=smoke", "logger=csv", "strategy=single_gpu"]
# Some pretraining and training, so that predictions are text that a changed weight would alter.
TRAINED = ["backbone.tiny.pretrain_steps=100", "trainer.max_steps=30"]


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_fused_equals_loop_on_cuda(family):
    fused, loop = (mixed_loss_and_grads(family, m, "cuda", bf16=False) for m in ("fused", "loop"))
    torch.testing.assert_close(fused[0], loop[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(fused[1], loop[1], rtol=0, atol=1e-5)
    for a, b in zip(fused[2], loop[2]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_bf16_autocast_mixing_tracks_fp32(family):
    check_bf16_tracks_fp32(family, "cuda")


@pytest.mark.parametrize(
    "extra", [[], ["pet=prompt"], ["backbone=tiny_llama"]], ids=["lora-t5", "prompt-t5", "lora-llama"]
)
def test_sapt_stream_on_one_gpu_reloads_exactly(make_cfg, tmp_path, extra):
    run(make_cfg(*SMOKE, *TRAINED, *extra))
    run_dir = tmp_path / "run"
    recorded = json.loads((run_dir / "results.json").read_text())
    assert recorded["config"]["strategy"]["precision"] == "bf16-mixed"
    blocks = sorted(run_dir.glob("tasks/*/sapt_*.safetensors"))
    assert len(blocks) == 2
    for block in blocks:
        assert all(t.dtype == torch.float32 for t in load_file(str(block)).values()), block

    results = evaluate_run(run_dir)  # rebuilt from disk, on the GPU again
    assert results["row"] == recorded["matrix"][-1]
    torch.testing.assert_close(
        torch.tensor(results["attention"]["test"]), torch.tensor(recorded["attention"]["test"]), rtol=0, atol=1e-6
    )
    for name in recorded["order"]:
        assert results["examples"][name] == recorded["examples"][name]


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed (make install-deepspeed)")
@pytest.mark.parametrize("strategy", ["deepspeed_zero2", "deepspeed_zero3_offload"])
def test_deepspeed_stream_on_one_gpu(tmp_path, cache_dir, strategy):
    """Lightning's DeepSpeedStrategy, one Trainer per task on the same module: the stream finishes,
    the trained blocks are DeepSpeed's fp32 master weights (not its bf16 copies), and the artifacts
    reload to the recorded scores. (Before a GPU, ZeRO-3 ran on a CPU engine: tests/test_zero3.py.)"""
    run_dir = tmp_path / "ds"
    env = {**os.environ, "SAPT_DATA_DIR": str(DATA_DIR), "SAPT_CACHE_DIR": str(cache_dir), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sapt_lightning",
            "debug=smoke",
            "logger=csv",
            *TRAINED,
            "benchmark.num_tasks=3",
            f"strategy={strategy}",
            "strategy.devices=1",
            f"paths.output_dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    recorded = json.loads((run_dir / "results.json").read_text())
    assert all(v is not None for v in recorded["matrix"][-1])
    blocks = sorted(run_dir.glob("tasks/*/sapt_block.safetensors"))
    assert len(blocks) == 3
    for block in blocks:
        tensors = load_file(str(block))
        assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors.values()), block
        trained = torch.cat([t.flatten() for name, t in tensors.items() if "lora_B" in name])
        assert (trained != trained.bfloat16().float()).any(), f"{block}: only bf16 values (master weights lost)"
    results = evaluate_run(run_dir)  # on the GPU, where the run scored
    assert results["row"] == recorded["matrix"][-1]


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed (make install-deepspeed)")
@pytest.mark.parametrize("method", ["olora", "l2p", "lfpt5"])
def test_baselines_under_zero3_on_one_gpu(tmp_path, cache_dir, method):
    """A baseline under ZeRO-3 (each reads its parameters outside the module owning them; on a CPU
    engine: tests/test_zero3.py): the stream finishes in bf16 and its artifacts reload to its scores."""
    run_dir = tmp_path / "z3"
    env = {**os.environ, "SAPT_DATA_DIR": str(DATA_DIR), "SAPT_CACHE_DIR": str(cache_dir), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sapt_lightning",
            "debug=smoke",
            "logger=csv",
            *TRAINED,
            f"method={method}",
            "strategy=deepspeed_zero3_offload",
            "strategy.devices=1",
            f"paths.output_dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    recorded = json.loads((run_dir / "results.json").read_text())
    assert evaluate_run(run_dir)["row"] == recorded["matrix"][-1]


# The methods with device code of their own (selectors, pools, statistics, replay, generation).
@pytest.mark.parametrize(
    "method",
    [
        "replay",
        "olora",
        "progprompt",
        "l2p",
        "lfpt5",
        "epi",
        "mtl",
        "sapt ablation=no_alignment",
        "sapt ablation=no_sa",
    ],
)
def test_every_method_runs_on_one_gpu(make_cfg, tmp_path, method):
    name, *ablation = method.split()
    stream = ["benchmark.tasks=[topic,sentiment]"] if name == "epi" else []
    run(make_cfg(*SMOKE, f"method={name}", *ablation, *stream))
    matrix = json.loads((tmp_path / "run" / "results.json").read_text())["matrix"]
    assert matrix[-1][-1] is not None
