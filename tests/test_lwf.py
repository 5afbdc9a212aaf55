"""method=lwf: distillation from the LoRA the last task left, on the new task's inputs."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TRAINED_SMOKE, assert_reload_reproduces_run, compose_cfg

from sapt_lightning.errors import ConfigError
from sapt_lightning.run import run


@pytest.mark.parametrize("backbone", ["tiny_t5", "tiny_llama"])
def test_distillation_is_zero_at_the_teacher_and_pulls_back_toward_it(make_cfg, cache_dir, backbone):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.benchmarks import build_tasks
    from sapt_lightning.data.datamodule import ContinualDataModule
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", "method=lwf", f"backbone={backbone}", "pet.dropout=0")
    backbone = load_backbone(cfg.backbone, cache_dir)
    module = build_method(cfg, backbone)
    tasks = build_tasks(cfg)
    data = ContinualDataModule.from_config(cfg, tasks, backbone)
    batch = next(iter(data.loader(tasks[1], tasks[1].train[:4], with_labels=True)))
    with torch.no_grad():  # as if task 1 had trained its LoRA
        for name, p in module.model.named_parameters():
            if p.requires_grad and "lora_B" in name:
                p.normal_(0, 0.5)
    module.start_task(1, tasks[1])
    assert module.training_losses(batch)["distill"] == pytest.approx(0, abs=1e-6)

    with torch.no_grad():  # the student drifts from the teacher
        for name, p in module.model.named_parameters():
            if p.requires_grad and "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.5)
    losses = module.training_losses(batch)
    assert losses["distill"] > 0 and losses["loss"] > losses["task_loss"]


def test_lwf_runs_and_reloads_exactly(make_cfg, tmp_path):
    run(make_cfg(*TRAINED_SMOKE, "method=lwf"))
    assert "train/distill" in (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert_reload_reproduces_run(tmp_path / "run")


def test_lwf_settings_are_checked():
    from sapt_lightning.config_checks import check_values

    with pytest.raises(ConfigError, match="^" + re.escape("method.temperature=0 cannot work: it must be a number > 0")):
        check_values(compose_cfg(["method=lwf", "method.temperature=0"]))
