"""Wall time of a stream by phase: where a run spends its time (results.json `phases_s`).

Each phase is timed where it runs (`with phase("evaluation"): ...`), exclusively: a phase entered
inside another stops the outer one's clock, so the ARM replay's forward inside a training step
counts as `arm_replay` and not as `training`. The replay loss's backward runs with the task loss's
and counts as training. Host wall time: on a GPU a phase's kernels count where the host waits for
them (usually the next synchronising call), so GPU phase times are approximate.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

PHASES = (
    "training",  # Lightning's fit of a task: the task loss's forward and backward, optimizer steps
    "arm_replay",  # SAPT: the forward of the pseudo samples' routing and the KL
    "generator_training",  # SAPT: fitting a task's pseudo-sample generator
    "pseudo_sampling",  # SAPT: sampling its pseudo samples
    "evaluation",  # decoding and scoring every seen task after each task
    "statistics",  # attention targets, selectors, the attention matrices of results.json
    "writing",  # task artifacts, the stream state, results.json, the report and its plots
)

_totals: dict[str, float] = dict.fromkeys(PHASES, 0.0)
_open: list[list] = []  # [name, started] of the phases entered and not left, innermost last


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the time inside as `name` (one of PHASES), less the time of phases nested in it."""
    assert name in _totals, f"unknown phase {name!r}; one of {PHASES}"
    now = time.perf_counter()
    if _open:
        outer = _open[-1]
        _totals[outer[0]] += now - outer[1]
    _open.append([name, now])
    try:
        yield
    finally:
        now = time.perf_counter()
        _totals[name] += now - _open.pop()[1]
        if _open:
            _open[-1][1] = now


def timed_as(name: str) -> Callable[[F], F]:
    """A function whose every call counts as the phase `name`."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with phase(name):
                return fn(*args, **kwargs)

        return timed  # type: ignore[return-value]

    return wrap


def take() -> dict[str, float]:
    """The totals since the last take, which starts new ones."""
    out = dict(_totals)
    for name in _totals:
        _totals[name] = 0.0
    return out


def with_other(phases: dict[str, float], wall_s: float) -> dict[str, float]:
    """Rounded phase times plus `other`: the wall time no phase accounts for (setup, loading, Lightning)."""
    out = {name: round(phases.get(name, 0.0), 2) for name in PHASES}
    out["other"] = round(max(wall_s - sum(phases.get(name, 0.0) for name in PHASES), 0.0), 2)
    return out
