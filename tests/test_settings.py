"""Typed settings: every section of every composed config builds; a missing key, a wrong type, an
unknown choice or a value out of range is one line naming the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
from conftest import CONF, compose_cfg
from omegaconf import OmegaConf

from sapt_lightning.config_checks import check_values
from sapt_lightning.errors import ConfigError
from sapt_lightning.methods.registry import method_class
from sapt_lightning.rules import at_least, positive
from sapt_lightning.settings import RunSettings, Settings, pet_settings, setting


@dataclass(frozen=True)
class Inner(Settings):
    mode: Literal["a", "b"] = setting()


@dataclass(frozen=True)
class Outer(Settings):
    steps: int = setting(at_least(1))
    lr: float = setting(positive())
    limit: int | None = setting(at_least(1))
    flag: bool = setting()
    inner: Inner = setting()


GOOD = {"steps": 3, "lr": 1, "limit": None, "flag": True, "inner": {"mode": "a"}, "extra": "left alone"}


def test_a_section_builds_typed():
    built = Outer.from_config(OmegaConf.create(GOOD), "m")
    assert built == Outer(steps=3, lr=1.0, limit=None, flag=True, inner=Inner(mode="a"))
    assert isinstance(built.lr, float)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"steps": 0}, "m.steps=0 cannot work: it must be an integer >= 1"),
        ({"steps": 2.5}, "m.steps=2.5 cannot work: it must be an integer >= 1"),
        ({"steps": True}, "m.steps=True cannot work: it must be an integer >= 1"),
        ({"lr": "fast"}, "m.lr='fast' cannot work: it must be a number > 0"),
        ({"limit": 0}, "m.limit=0 cannot work: it must be an integer >= 1"),
        ({"flag": "yes"}, "m.flag='yes' cannot work: it must be true or false"),
        ({"flag": None}, "m.flag=None cannot work: it must be true or false"),
        ({"inner": {"mode": "c"}}, "m.inner.mode='c' cannot work: it must be a or b"),
        ({"inner": 3}, "m.inner=3 cannot work: it must be a section of keys"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(change, message):
    with pytest.raises(ConfigError) as err:
        Outer.from_config(OmegaConf.create({**GOOD, **change}), "m")
    assert str(err.value) == message


def test_a_missing_key_is_named():
    with pytest.raises(ConfigError, match=r"^m\.inner\.mode is missing: the config must set it$"):
        Outer.from_config(OmegaConf.create({**GOOD, "inner": {}}), "m")


@pytest.mark.parametrize("method", sorted(p.stem for p in (CONF / "method").glob("*.yaml")))
def test_every_method_and_the_framework_build_their_settings(method):
    stream = ["benchmark=long_sequence", "order=4"] if method == "olora_long_order4" else []
    cfg = compose_cfg([f"method={method}", *stream])
    RunSettings.from_config(cfg, "")
    pet_settings(cfg)
    settings = method_class(cfg.method).settings_class.from_config(cfg.method, "method")
    assert settings.name == cfg.method.name and settings.lr == cfg.method.lr


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["trainer.max_steps=-1", "trainer.max_epochs=-1"],
            "trainer.max_steps=-1 and trainer.max_epochs=-1: each task",
        ),
        (["benchmark.test_per_task=0"], "benchmark.test_per_task=0 cannot work: it must be an integer >= 1"),
        (["method.arm.replay_batch_size=0"], "method.arm.replay_batch_size=0 cannot work: it must be an integer >= 1"),
        (
            ["trainer.checkpoint_every_n_steps=-5"],
            "trainer.checkpoint_every_n_steps=-5 cannot work: it must be an integer >= 0",
        ),
        (
            ["backbone=tiny_llama", "fidelity.llama_arm_target_weighting=decoding_steps"],  # clean: per example
            "fidelity.llama_arm_target_weighting=decoding_steps weighs the release's batch means",
        ),
        (
            ["fidelity=official", "data.group_by_length=true"],
            "data.group_by_length=true needs fidelity.mask_padding_in_pooling=true",
        ),
    ],
)
def test_a_config_that_cannot_end_or_be_scored_is_refused_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_values(compose_cfg(overrides))
