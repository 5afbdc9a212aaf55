"""Seeded draws that leave the caller's random streams where they were; the global streams' state,
for a checkpoint to carry."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Draw from `seed` on the CPU and on `device`'s generator (sampling on a GPU draws from the
    GPU's), then restore both: the training stream after this does not depend on what was drawn."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def replay_seed(seed: int, task_index: int, source: int) -> int:
    """The shuffle seed of the replay of earlier task `source` while task `task_index` trains:
    distinct for every pair, the same on every rank and after a resume."""
    return seed * 1_000_003 + task_index * 1_009 + source


def capture() -> dict[str, Any]:
    """Every global random stream training draws from (dropout, shuffles of libraries), in types
    that a checkpoint loaded with `weights_only` accepts."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = (name, keys.tolist(), pos, has_gauss, gauss)
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
