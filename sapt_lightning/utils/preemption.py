"""A cluster's notice before preemption (SIGTERM, or SIGUSR1 from `sbatch --signal`), turned
into a flag that training polls at step boundaries, where a checkpoint is consistent.

A signal handler may run between any two bytecodes, in the middle of a backward pass or of a
checkpoint write; it only records the request, and the training loops act on it between steps
(cl/checkpoints.py for a task's fit, methods/generator.py for the ARM generator).
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

from ..errors import Preempted

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_requested: list[str] = []


def _note(signum: int, _frame: FrameType | None) -> None:
    if not _requested:
        _requested.append(signal.Signals(signum).name)


def install() -> None:
    """Record SIGTERM and SIGUSR1 instead of dying at once (Lightning chains its own SIGTERM
    handler onto this one during a fit). A request is never forgotten: one that comes between two
    jobs of a sweep stops the next job at its first step."""
    for signum in SIGNALS:
        signal.signal(signum, _note)


def requested() -> str | None:
    """The name of the signal that asked this process to stop, if one did."""
    return _requested[0] if _requested else None


def stop_if_requested(where: str) -> None:
    """Raise Preempted if a stop was asked for; `where` says what is saved and what resumes."""
    name = requested()
    if name:
        raise Preempted(f"received {name}: {where}; re-run the same command to resume")
