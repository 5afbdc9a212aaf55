"""What a config value must be: small named rules that the framework and each method declare.

A rule is (requirement, test): the requirement is the text of the one-line error, the test
takes the composed value. Methods declare the rules of their own keys next to their class
(`ContinualModule.rules`); `config_checks` applies them with the framework's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

Rule = tuple[str, Callable[[Any], bool]]
#: key -> (requirement, test, null allowed)
Rules = dict[str, tuple[str, Callable[[Any], bool], bool]]


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def at_least(n: int) -> Rule:
    return f"an integer >= {n}", lambda v: _whole(v) and v >= n


def positive() -> Rule:
    return "a number > 0", lambda v: _number(v) and v > 0


def fraction(upper_included: bool) -> Rule:
    if upper_included:
        return "a fraction in (0, 1]", lambda v: _number(v) and 0 < v <= 1
    return "a fraction in [0, 1)", lambda v: _number(v) and 0 <= v < 1


def one_of(*choices: str) -> Rule:
    return " or ".join(choices), lambda v: v in choices


def non_negative() -> Rule:
    return "a number >= 0", lambda v: _number(v) and math.isfinite(v) and v >= 0


def budget() -> Rule:
    return "-1 (no limit) or an integer >= 1", lambda v: _whole(v) and (v == -1 or v >= 1)


_ABSENT = object()


def check_rules(cfg: DictConfig, rules: Rules) -> None:
    """Raise ConfigError naming the first key whose value breaks its rule; absent keys are skipped
    (a key of another method or PET type)."""
    for key, (requirement, ok, nullable) in rules.items():
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            continue
        value = OmegaConf.select(cfg, key)
        if value is None and nullable:
            continue
        if not ok(value):
            raise ConfigError(f"{key}={value!r} cannot work: it must be {requirement}")
