"""Fault injection for the reliability tests: SIGKILL this process at a named point.

`SAPT_FAULT=<point>:<task number>` (1-based), e.g. `after_artifacts:2`. Points:
`mid_task` (a few optimizer steps into the task), `after_artifacts` (the task's files
are on disk, the stream state does not yet say so), `during_eval` (scoring the row).
Unset in normal use; reading one environment variable costs nothing.
"""

from __future__ import annotations

import os
import signal

POINTS = ("mid_task", "after_artifacts", "during_eval")


def maybe_fault(point: str, task_index: int) -> None:
    spec = os.environ.get("SAPT_FAULT")
    if not spec:
        return
    name, _, task = spec.partition(":")
    if name == point and task.isdigit() and int(task) == task_index + 1:
        os.kill(os.getpid(), signal.SIGKILL)
