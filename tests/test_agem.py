"""method=agem: the step is projected off the memory's gradient only when the two conflict."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import TRAINED_SMOKE, assert_reload_reproduces_run, compose_cfg

from sapt_lightning.errors import ConfigError
from sapt_lightning.run import run


def flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in params])


def set_grad(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def test_a_conflicting_step_is_projected_and_an_agreeing_one_kept(make_cfg, cache_dir):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.benchmarks import build_tasks
    from sapt_lightning.data.datamodule import ContinualDataModule
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", "method=agem", "method.memory_batch_size=4")
    backbone = load_backbone(cfg.backbone, cache_dir)
    module = build_method(cfg, backbone)
    tasks = build_tasks(cfg)
    module.memory = [tasks[0].train[:4]]  # the whole memory is every reference batch
    module.start_task(1, tasks[1])
    module.attach_replay(ContinualDataModule.from_config(cfg, tasks, backbone))
    module.eval()  # no dropout: every reference gradient is the same
    params = [p for p in module.parameters() if p.requires_grad]
    reference = module.memory_gradient(params)
    assert reference.norm() > 0

    conflicting = -0.5 * reference + 0.1 * torch.randn_like(reference)
    set_grad(params, conflicting)
    module.on_before_optimizer_step(None)
    projected = flat_grad(params)
    assert torch.dot(projected, reference).abs() < 1e-4 * reference.norm() * conflicting.norm()
    expected = conflicting - torch.dot(conflicting, reference) / reference.dot(reference) * reference
    assert torch.allclose(projected, expected, atol=1e-6)

    agreeing = reference + 0.1 * torch.randn_like(reference)
    set_grad(params, agreeing)
    module.on_before_optimizer_step(None)
    assert torch.equal(flat_grad(params), agreeing)


def test_agem_keeps_replays_memory_trains_only_the_task_and_reloads_exactly(make_cfg, tmp_path):
    from sapt_lightning.data.benchmarks import build_tasks
    from sapt_lightning.methods.base import replay_volume

    cfg = make_cfg(*TRAINED_SMOKE, "method=agem")
    run(cfg)
    run_dir = tmp_path / "run"
    memory = json.loads((sorted((run_dir / "tasks").iterdir())[0] / "replay_memory.json").read_text())
    assert len(memory["Instances"]) == replay_volume(0.02, len(build_tasks(cfg)[0].train))  # Replay's budget
    assert "train/memory_conflict" in (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert_reload_reproduces_run(run_dir)


def test_a_memory_of_nothing_is_refused():
    from sapt_lightning.config_checks import check_values

    message = "method.replay_fraction=0 cannot work: it must be a fraction in (0, 1]"
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_values(compose_cfg(["method=agem", "method.replay_fraction=0"]))


def test_deepspeed_is_refused_before_any_model():
    from sapt_lightning.methods.baselines.agem import AGEMModule

    cfg = compose_cfg(["method=agem", "strategy=deepspeed_zero2"])
    with pytest.raises(
        ConfigError, match=r"^method=agem cannot run under strategy=deepspeed_zero2: .*single_gpu or ddp$"
    ):
        AGEMModule.check_tasks(cfg, [])
