"""Shared fixtures: compose the real conf tree, tiny random backbones, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from sapt_lightning.cli import quote_numeric_choices

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "sapt_lightning" / "conf"
DATA_DIR = Path(os.environ.get("SAPT_DATA_DIR", ROOT.parent / "shared" / "cl_benchmark"))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One backbone cache for the session (tiny random backbones build in about a second)."""
    return tmp_path_factory.mktemp("cache")


def compose_cfg(overrides: list[str], output_dir: Path | None = None, cache: Path | None = None) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=quote_numeric_choices(overrides), return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir) if output_dir else "/nonexistent"
        if cache is not None:
            cfg.paths.cache_dir = str(cache)
        cfg.paths.data_dir = str(DATA_DIR)
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def make_cfg(tmp_path, cache_dir):
    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        return compose_cfg(list(overrides), run_dir or tmp_path / "run", cache_dir)

    return make


# A little pretraining and training, so predictions are non-empty text that any change in the
# loaded weights would alter (the random smoke model predicts '' everywhere).
TRAINED_SMOKE = ["debug=smoke", "logger=csv", "backbone.tiny.pretrain_steps=100", "trainer.max_steps=30"]


def assert_reload_reproduces_run(run_dir: Path) -> None:
    """A finished stream rebuilt from its config and task folders (`sapt-evaluate`) scores and
    predicts every task as the run recorded: the method saved and restored all it trains."""
    import json

    from sapt_lightning.evaluate import evaluate_run

    recorded = json.loads((run_dir / "results.json").read_text())
    results = evaluate_run(run_dir)
    assert results["row"] == recorded["matrix"][-1]
    assert any(e["prediction"] for name in recorded["order"] for e in recorded["examples"][name])
    for name in recorded["order"]:
        assert results["examples"][name] == recorded["examples"][name], name
