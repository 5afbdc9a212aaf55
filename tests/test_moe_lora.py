"""method=moe_lora: LoRA experts mixed per sample by a learned router, all trained through the stream."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TRAINED_SMOKE, assert_reload_reproduces_run, compose_cfg
from safetensors.torch import load_file

from sapt_lightning.errors import ConfigError
from sapt_lightning.run import run


def test_every_expert_and_the_router_train_and_the_run_reloads_exactly(make_cfg, tmp_path):
    from sapt_lightning.methods.baselines.moe_lora import STATE_FILE

    run(make_cfg(*TRAINED_SMOKE, "method=moe_lora", "method.experts=3"))
    run_dir = tmp_path / "run"
    first, second = (load_file(d / STATE_FILE) for d in sorted((run_dir / "tasks").iterdir()))
    b_keys = [k for k in first if ".lora_B." in k]
    assert {k.rsplit(".", 1)[1] for k in b_keys} == {"0", "1", "2"}
    for e in "012":  # B starts at zero: every expert learnt on task 1, and kept learning on task 2
        expert = [k for k in b_keys if k.endswith(f".{e}")]
        assert any(first[k].abs().sum() > 0 for k in expert)
        assert any(not torch.equal(first[k], second[k]) for k in expert)
    assert not torch.equal(first["router.weight"], second["router.weight"])
    assert_reload_reproduces_run(run_dir)


def test_the_router_gives_each_sample_its_own_weights(make_cfg, cache_dir):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", "method=moe_lora")
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    ids = torch.tensor([[5, 6, 7, 0], [9, 9, 0, 0]])
    mask = (ids != 0).long()
    weights = module.route(ids, mask)
    assert weights.shape == (2, 4) and torch.allclose(weights.sum(-1), torch.ones(2))
    assert not torch.allclose(weights[0], weights[1])
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1)  # padding changes nothing
    assert torch.allclose(module.route(padded, (padded != 0).long()), weights)


def test_a_decoder_only_row_is_routed_on_its_prompt_not_its_answer(make_cfg, cache_dir):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.benchmarks import build_tasks
    from sapt_lightning.data.datamodule import ContinualDataModule
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", "method=moe_lora", "backbone=tiny_llama")
    backbone = load_backbone(cfg.backbone, cache_dir)
    module = build_method(cfg, backbone)
    tasks = build_tasks(cfg)
    data = ContinualDataModule.from_config(cfg, tasks, backbone)
    examples = tasks[0].test[:3]
    training = next(iter(data.loader(tasks[0], examples, with_labels=True)))
    prompt_only = next(iter(data.loader(tasks[0], examples)))
    module.backbone_inputs(training)
    routed_in_training = module.mixing.weights
    module.backbone_inputs(prompt_only, generation=True)
    assert torch.allclose(routed_in_training, module.mixing.weights)


def test_no_experts_is_refused():
    from sapt_lightning.config_checks import check_values

    message = "method.experts=0 cannot work: it must be an integer >= 1"
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_values(compose_cfg(["method=moe_lora", "method.experts=0"]))
