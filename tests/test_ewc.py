"""method=ewc: the Fisher-weighted penalty toward the last task's LoRA, its saved state, its settings."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import TRAINED_SMOKE, assert_reload_reproduces_run, compose_cfg
from safetensors.torch import load_file

from sapt_lightning.errors import ConfigError
from sapt_lightning.methods.baselines.ewc import FISHER_FILE
from sapt_lightning.run import run


def test_ewc_accumulates_its_fisher_resumes_and_reloads_exactly(make_cfg, tmp_path):
    first = run(make_cfg(*TRAINED_SMOKE, "method=ewc"))
    run_dir = tmp_path / "run"
    tasks = sorted((run_dir / "tasks").iterdir())
    fisher = [load_file(d / FISHER_FILE) for d in tasks]
    assert set(fisher[0]) == set(fisher[1]) and all(k.endswith("weight") and "lora_" in k for k in fisher[0])
    # fisher_decay=1: the second task's Fisher is the first one's plus its own (non-negative).
    assert all(torch.all(fisher[1][k] >= fisher[0][k]) for k in fisher[0])
    assert any(fisher[1][k].sum() > fisher[0][k].sum() > 0 for k in fisher[0])
    losses = [line for line in (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()]
    assert "train/ewc_penalty" in losses[0]

    # Stopped after task 1: the re-run reloads its adapter and Fisher and repeats task 2 exactly.
    state = json.loads((run_dir / "stream_state.json").read_text())
    state.update(completed=1, matrix=state["matrix"][:1])
    (run_dir / "stream_state.json").write_text(json.dumps(state))
    again = run(make_cfg(*TRAINED_SMOKE, "method=ewc"))
    assert again["matrix"] == first["matrix"]
    assert all(torch.equal(load_file(tasks[1] / FISHER_FILE)[k], fisher[1][k]) for k in fisher[1])
    assert_reload_reproduces_run(run_dir)


@pytest.mark.parametrize(
    "override, rule",
    [("method.fisher_samples=0", "an integer >= 1"), ("method.fisher_decay=1.5", "a number in [0, 1]")],
)
def test_ewc_settings_are_checked(override, rule):
    from sapt_lightning.config_checks import check_values

    with pytest.raises(ConfigError, match="^" + re.escape(f"{override} cannot work: it must be {rule}")):
        check_values(compose_cfg(["method=ewc", override]))


def test_ewc_is_lora_only():
    from sapt_lightning.methods.registry import check_method

    with pytest.raises(ConfigError, match=r"^method=ewc does not support pet=prompt; it supports pet=lora$"):
        check_method(compose_cfg(["method=ewc", "pet=prompt"]))
