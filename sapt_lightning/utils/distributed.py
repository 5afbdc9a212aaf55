"""Data parallelism outside `Trainer.fit`: which process writes, and how ranks share work.

Under Lightning's DDP and DeepSpeed launchers every rank runs the whole stream (the
launcher re-executes the command), so the loop's own work between fits - ARM
statistics, evaluation, artifacts - must be rank-aware:
- files are written by global rank 0 only (the others hold the same state);
- evaluation and attention statistics are split across ranks and gathered, so every
  rank contributes and all end with the same full result (the release used rank 0's
  shard only, docs/method.md §11.20);
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


class RankFailed(RuntimeError):
    """Another data-parallel rank failed; this one stops too instead of waiting in a collective."""


def _gather(value: object) -> list:
    gathered: list = [None] * rank_and_world()[1]
    dist.all_gather_object(gathered, value)
    return gathered


def run_everywhere(fn: Callable[[], R], what: str) -> R:
    """fn() on every rank; if it fails on any rank, every rank raises (none is left waiting)."""
    try:
        result, error = fn(), None
    except Exception as err:
        result, error = None, err
    if rank_and_world()[1] > 1:
        status = _gather(None if error is None else f"{type(error).__name__}: {error}")
        failed = [(r, message) for r, message in enumerate(status) if message]
        if failed and error is None:
            raise RankFailed(f"{what} failed on rank {failed[0][0]}: {failed[0][1]}")
    if error is not None:
        raise error
    return result  # type: ignore[return-value]


def map_sharded(items: Sequence[T], fn: Callable[[list[T]], list[R]], chunk: int = 1) -> list[R]:
    """fn over items, split across ranks and gathered back in the original order.

    Items go out in chunks of `chunk` (the evaluation batch size), chunk k to rank k % world,
    so every batch holds exactly the examples one process would batch together: results
    that depend on the batch (padding under fidelity=official) match a single process.
    A failure on any rank is raised on all of them.
    """
    rank, world = rank_and_world()
    if world == 1:
        return fn(list(items))
    chunks = [list(items[i : i + chunk]) for i in range(0, len(items), chunk)]
    mine = [c for k, c in enumerate(chunks) if k % world == rank]

    def local() -> list[list[R]]:
        return [fn(c) for c in mine]

    try:
        part, error = local(), None
    except Exception as err:
        part, error = None, f"{type(err).__name__}: {err}"
        raised = err
    gathered = _gather((error, part))
    failed = [(r, e) for r, (e, _) in enumerate(gathered) if e]
    if failed:
        if error is not None:
            raise raised
        raise RankFailed(f"rank {failed[0][0]} failed: {failed[0][1]}")
    out: list[R] = []
    per_rank = [iter(p) for _, p in gathered]
    for k in range(len(chunks)):
        out.extend(next(per_rank[k % world]))
    return out


def sync_from_rank_zero(load: Callable[[], None]) -> None:
    """After rank 0 wrote a task's artifacts: every other rank reloads them, so all ranks hold
    rank 0's state exactly (generators, pseudo samples, statistics), whatever the GPU's
    non-determinism did on each. Callers reach this after a collective, so the files exist."""
    if rank_and_world()[0] != 0:
        load()
