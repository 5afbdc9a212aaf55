"""One process per run directory.

Two processes writing one run directory would silently replace each other's results. A run holds
an advisory lock (`flock`) on `<run_dir>/.lock` for its whole life; the kernel drops it when the
holder exits, however it exits, so a lock left by a `kill -9` is simply taken by the next run.
The file stays (emptied) when the run ends: unlinking it would let two later runs lock two
different files of the same name.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import ConfigError

LOCK_FILE = ".lock"


def _lock_or_holder(fh: IO[str]) -> str | None:
    """Lock the open lock file and return None, or return the pid written by the live process
    that holds it."""
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        return fh.read().strip() or "unknown"
    return None


def holder(run_dir: Path) -> str | None:
    """The pid of the live process that holds `run_dir`, or None when none does."""
    path = run_dir / LOCK_FILE
    if not path.is_file():
        return None
    with open(path, "a+") as fh:
        return _lock_or_holder(fh)  # closing the file drops a lock taken here


def in_use(run_dir: Path, pid: str) -> ConfigError:
    return ConfigError(
        f"{run_dir} is in use by another run (pid {pid}); wait for it to finish, or give this run "
        "another directory (hydra.run.dir=...)"
    )


@contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` until the block ends; refuse (ConfigError) when a live process holds it."""
    path = run_dir / LOCK_FILE
    fh = open(path, "a+")  # noqa: SIM115 - held open for the run's whole life
    pid = _lock_or_holder(fh)
    if pid is not None:
        fh.close()
        raise in_use(run_dir, pid)
    fh.truncate(0)
    fh.write(str(os.getpid()))
    fh.flush()
    try:
        yield
    finally:
        fh.truncate(0)
        fh.close()
