"""Seeded draws that leave the caller's random streams where they were."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
