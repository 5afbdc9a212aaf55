"""Directories a command will write, checked before it writes anything (no torch: the report
tools import this too)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError


def check_output_dir(key: str, path: Path) -> None:
    """A directory this process will create or write: refuse, naming `key`, one that is a file, lies
    under a file, or whose nearest existing folder cannot be written, before anything is written."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file, not a directory; point it at a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}={path} lies under {existing}, which is a file; point it at a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: {existing} cannot be written by this user; point it at a writable directory")
