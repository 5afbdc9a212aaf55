"""What a config value must be, beyond its type: small named rules for `settings.setting(rule)`.

A rule is (requirement, test): the requirement is the text of the one-line error, the test
takes the value once its type is checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Rule = tuple[str, Callable[[Any], bool]]


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


def unit_interval() -> Rule:
    return "a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1


def one_of(*choices: str) -> Rule:
    return " or ".join(choices), lambda v: v in choices


def non_negative() -> Rule:
    return "a number >= 0", lambda v: _number(v) and math.isfinite(v) and v >= 0


def budget() -> Rule:
    return "-1 (no limit) or an integer >= 1", lambda v: _whole(v) and (v == -1 or v >= 1)
