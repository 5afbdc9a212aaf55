"""Fault injection for the reliability tests: signal this process at a named point.

`SAPT_FAULT=<point>:<task number>[:<signal>]` (task 1-based; signal KILL unless given), e.g.
`after_artifacts:2` or `mid_task:2:TERM`. Points: `mid_task` (half-way through the task's
optimizer steps), `mid_generator` (half-way through its ARM generator's steps),
`after_artifacts` (the task's files are on disk, the stream state does not yet say so),
`during_eval` (scoring the row). Unset in normal use; reading one environment variable costs nothing.
"""

from __future__ import annotations

import os
import signal

POINTS = ("mid_task", "mid_generator", "after_artifacts", "during_eval")


def maybe_fault(point: str, task_index: int) -> None:
    spec = os.environ.get("SAPT_FAULT")
    if not spec:
        return
    name, _, rest = spec.partition(":")
    task, _, sig = rest.partition(":")
    if name == point and task.isdigit() and int(task) == task_index + 1:
        os.kill(os.getpid(), signal.Signals[f"SIG{sig or 'KILL'}"])
