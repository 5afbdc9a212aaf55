"""Atomic writes: a temporary file in the same folder, then os.replace.

A crash or a failing write never leaves a half-written artifact behind, and the
previous version stays intact until the new one is complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import DataError

_UMASK = os.umask(0)
os.umask(_UMASK)


#: 16-bit float dtypes: written as fp32, and rounded by a strategy that casts to 16 bits.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file; under data parallelism only global rank 0 writes (the
    other ranks hold the same state, and two writers would race on the same path)."""
    from .distributed import is_global_zero

    if not is_global_zero():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts should read like any other file
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Half-precision tensors are written as fp32 (lossless), so that an artifact does not depend on
    the precision it was trained in (a generator adapter on a bf16 backbone is bf16, say)."""
    tensors = {k: (v.float() if v.dtype in HALF_DTYPES else v).detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def read_json(path: Path, shape: type = object) -> Any:
    """A JSON file whose top level is a `shape` (dict, list); anything else is one DataError line."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err}); it may have been edited or cut short") from None
    if not isinstance(data, shape):
        expected = {dict: "object", list: "list"}.get(shape, shape.__name__)
        raise DataError(
            f"{path}: expected a JSON {expected} at the top, found {type(data).__name__}; "
            "it may have been edited or replaced"
        )
    return data


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a task artifact; a missing, truncated or corrupt file is a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing artifact {path}; delete its task folder to retrain that task")
    try:
        return load_file(str(path))
    except Exception as err:
        raise DataError(
            f"{path}: not a readable safetensors file ({type(err).__name__}: truncated or corrupt?); "
            "delete its task folder and the run retrains that task"
        ) from None
