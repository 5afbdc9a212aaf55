"""method=ilora: the stable LoRA follows the plastic one by EMA after each step and is the one scored."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TRAINED_SMOKE, assert_reload_reproduces_run, compose_cfg
from safetensors.torch import load_file

from sapt_lightning.errors import ConfigError
from sapt_lightning.run import run


def test_the_stable_lora_moves_by_ema_and_stands_in_for_decoding(make_cfg, cache_dir):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", "method=ilora", "method.ema_alpha=0.9")
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    params = module.trained()
    before = {name: t.clone() for name, t in module.stable.items()}
    with torch.no_grad():
        for p in params.values():
            p.add_(1.0)
    plastic = {name: p.detach().clone() for name, p in params.items()}
    module.follow_plastic()
    for name in params:
        assert torch.allclose(module.stable[name], 0.9 * before[name] + 0.1 * plastic[name])

    with module.stable_weights():
        assert all(torch.equal(p, module.stable[name]) for name, p in params.items())
    assert all(torch.equal(p, plastic[name]) for name, p in params.items())


def test_ilora_trains_with_its_memory_and_reloads_exactly(make_cfg, tmp_path):
    from sapt_lightning.methods.baselines.ilora import STABLE_FILE
    from sapt_lightning.methods.baselines.seq_lora import ADAPTER_FILE

    # EMA 0: the stable LoRA is the plastic one after every step, the last included.
    run(make_cfg(*TRAINED_SMOKE, "method=ilora", "method.ema_alpha=0"))
    run_dir = tmp_path / "run"
    header = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "train/consistency" in header and "train/memory_loss" in header
    for task_dir in sorted((run_dir / "tasks").iterdir()):
        stable, plastic = load_file(task_dir / STABLE_FILE), load_file(task_dir / ADAPTER_FILE)
        assert len(stable) == len(plastic) and any(t.abs().sum() > 0 for k, t in stable.items() if "lora_B" in k)
        for key, tensor in stable.items():  # (peft's adapter names drop the ".default" of parameter names)
            assert torch.equal(tensor, plastic[key.replace(".default", "")]), key
    assert_reload_reproduces_run(run_dir)  # scored with the stable LoRA, restored from its own file


def test_a_checkpoint_inside_a_task_carries_the_stable_lora(make_cfg, cache_dir):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", "method=ilora")
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    with torch.no_grad():
        for tensor in module.stable.values():
            tensor.add_(0.5)
    saved = {name: t.clone() for name, t in module.stable.items()}
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    for tensor in module.stable.values():
        tensor.zero_()
    module.on_load_checkpoint(checkpoint)
    assert all(torch.equal(module.stable[name], saved[name]) for name in saved)


def test_an_ema_outside_the_unit_interval_is_refused():
    from sapt_lightning.config_checks import check_values

    message = "method.ema_alpha=1.5 cannot work: it must be a number in [0, 1]"
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_values(compose_cfg(["method=ilora", "method.ema_alpha=1.5"]))
