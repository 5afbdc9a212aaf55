"""utils/distributed.py with two real gloo processes: gathers keep order, and a failure on
one rank is raised on every rank instead of leaving the others waiting."""

from __future__ import annotations

import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from sapt_lightning.utils.distributed import RankFailed, map_sharded, run_everywhere


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # chunks of 3 go round-robin; every rank ends with the whole list, in order
        ok = map_sharded(list(range(10)), lambda part: [x * 10 for x in part], chunk=3)

        def fail_on_rank_1(part):
            if rank == 1:
                raise ValueError("out of memory on the long inputs")
            return part

        try:
            map_sharded(list(range(10)), fail_on_rank_1, chunk=3)
            shard = "no error"
        except RankFailed as err:
            shard = f"RankFailed: {err}"
        except ValueError as err:
            shard = f"ValueError: {err}"

        def write_on_rank_0():
            if rank == 0:
                raise OSError("No space left on device")

        try:
            run_everywhere(write_on_rank_0, "task 2 (topic): end of task")
            everywhere = "no error"
        except RankFailed as err:
            everywhere = f"RankFailed: {err}"
        except OSError as err:
            everywhere = f"OSError: {err}"
        results[rank] = (ok, shard, everywhere)
    finally:
        dist.destroy_process_group()


def test_gathers_keep_order_and_failures_reach_every_rank():
    ctx = mp.get_context("spawn")
    results = ctx.Manager().dict()
    mp.start_processes(_worker, args=(_free_port(), results), nprocs=2, start_method="spawn", join=True)
    for rank in (0, 1):
        assert results[rank][0] == [x * 10 for x in range(10)]
    assert results[1][1] == "ValueError: out of memory on the long inputs"
    assert results[0][1] == "RankFailed: rank 1 failed: ValueError: out of memory on the long inputs"
    assert results[0][2] == "OSError: No space left on device"
    assert results[1][2] == "RankFailed: task 2 (topic): end of task failed on rank 0: OSError: No space left on device"


def test_single_process_is_a_plain_call():
    assert map_sharded([1, 2, 3], lambda part: [x + 1 for x in part], chunk=2) == [2, 3, 4]
    with pytest.raises(KeyError):
        run_everywhere(lambda: {}["missing"], "x")
