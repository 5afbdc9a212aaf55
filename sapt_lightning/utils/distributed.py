"""Data parallelism outside `Trainer.fit`: which process writes, and how ranks share work.

Under Lightning's DDP and DeepSpeed launchers every rank runs the whole stream (the
launcher re-executes the command), so the loop's own work between fits - ARM
statistics, evaluation, artifacts - must be rank-aware:
- files are written by global rank 0 only (the others hold the same state);
- evaluation and attention statistics are split across ranks and gathered, so every
  rank contributes and all end with the same full result (the release used rank 0's
  shard only, SAPT_SPEC.md 11.20);
- nothing here waits on other ranks except the gathers, which every rank reaches in the
  same order, so task boundaries cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")
R = TypeVar("R")


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of the process group, or (env rank, 1) before one exists."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0), 1


def is_global_zero() -> bool:
    return rank_and_world()[0] == 0


def map_sharded(items: Sequence[T], fn: Callable[[list[T]], list[R]]) -> list[R]:
    """fn over items, split round-robin across ranks and gathered back in the original order."""
    rank, world = rank_and_world()
    if world == 1:
        return fn(list(items))
    local = fn(list(items[rank::world]))
    gathered: list[list[R] | None] = [None] * world
    dist.all_gather_object(gathered, local)
    out: list = [None] * len(items)
    for r, part in enumerate(gathered):
        out[r::world] = part
    return out
