"""Functions run inside spawned ranks by the tests (module level, so they pickle)."""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

from shared import get_info, make_node_groups, record_comm


def rank_info() -> dict:
    info = get_info()
    return {
        "rank": info.rank,
        "world": info.world_size,
        "local_rank": info.local_rank,
        "backend": info.backend,
        "device": str(info.device),
        "env_rank": int(os.environ["RANK"]),
    }


def all_reduce_rank() -> float:
    t = torch.tensor([float(dist.get_rank())])
    dist.all_reduce(t)
    return t.item()


def fail_on_rank(bad: int) -> int:
    if dist.get_rank() == bad:
        raise ValueError(f"boom from rank {bad}")
    return dist.get_rank()


def sleep_forever() -> None:
    time.sleep(3600)


def hard_exit_on_rank(bad: int) -> int:
    if int(os.environ["RANK"]) == bad:
        os._exit(3)
    return int(os.environ["RANK"])


def node_groups(node_size: int) -> dict:
    g = make_node_groups(node_size)
    rank = dist.get_rank()
    intra = torch.tensor([float(rank)])
    dist.all_reduce(intra, group=g.intra)
    inter = torch.tensor([float(rank)])
    dist.all_reduce(inter, group=g.inter)
    return {
        "intra_ranks": g.intra_ranks,
        "inter_ranks": g.inter_ranks,
        "intra_sum": intra.item(),
        "inter_sum": inter.item(),
        "node_index": g.node_index,
        "local_index": g.local_index,
        "num_nodes": g.num_nodes,
    }


def every_op() -> tuple[bool, list[tuple]]:
    """Issue each op once on 4 ranks; return whether gloo has all_to_all here, and
    (kind, nbytes, group, peer, sent, ring) per recorded op."""
    rank, world = dist.get_rank(), dist.get_world_size()
    f32 = torch.float32
    pair = dist.new_group([0, 1])
    outside = torch.ones(7)
    dist.all_reduce(outside)  # before the recorder: must not be counted
    try:  # gloo gained all_to_all in recent torch releases (2.13 has it, 2.11 does not)
        dist.all_to_all(
            [torch.empty(1) for _ in range(world)], [torch.ones(1) for _ in range(world)]
        )
        has_a2a = True
    except RuntimeError as e:
        if "alltoall" not in str(e):
            raise
        has_a2a = False
    with record_comm() as log:
        dist.all_reduce(torch.ones(10, dtype=f32))  # 40 B
        dist.broadcast(torch.ones(3, dtype=torch.float64), src=0)  # 24 B
        dist.reduce(torch.ones(5, dtype=f32), dst=1)  # 20 B
        out = [torch.empty(6, dtype=torch.int64) for _ in range(world)]
        dist.all_gather(out, torch.full((6,), rank, dtype=torch.int64))  # 48 B
        flat = torch.empty(world * 4)
        dist.all_gather_into_tensor(flat, torch.ones(4))  # 16 B
        dist.reduce_scatter(torch.empty(2), [torch.ones(2) for _ in range(world)])  # 4*8 = 32 B
        dist.reduce_scatter_tensor(torch.empty(3), torch.ones(3 * world))  # 48 B
        if has_a2a:
            dist.all_to_all(
                [torch.empty(2) for _ in range(world)], [torch.ones(2) for _ in range(world)]
            )  # 32 B, sent 24
        # uneven all_to_all_single: rank r sends (j+1) rows of 2 floats to rank j
        in_splits = [j + 1 for j in range(world)]
        out_splits = [rank + 1] * world
        dist.all_to_all_single(
            torch.empty(sum(out_splits), 2),
            torch.ones(sum(in_splits), 2),
            output_split_sizes=out_splits,
            input_split_sizes=in_splits,
        )
        if rank in (0, 1):
            t = torch.ones(9, dtype=torch.int32)  # 36 B on the pair group
            dist.all_reduce(t, group=pair)
        if rank == 0:
            dist.send(torch.ones(11), dst=1)  # 44 B
        elif rank == 1:
            dist.recv(torch.empty(11), src=0)
        # ring with batch_isend_irecv: each sends 8 int16 to the next (16 B)
        ops = [
            dist.P2POp(dist.isend, torch.ones(8, dtype=torch.int16), (rank + 1) % world),
            dist.P2POp(dist.irecv, torch.empty(8, dtype=torch.int16), (rank - 1) % world),
        ]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
        if rank == 2:
            dist.isend(torch.ones(2, 2), dst=3).wait()  # 16 B
        elif rank == 3:
            dist.irecv(torch.empty(2, 2), src=2).wait()
        dist.barrier()
    return has_a2a, [
        (o.kind, o.nbytes, o.group_ranks, o.peer, o.sent_bytes, o.ring_bytes()) for o in log.ops
    ]


def nested_recorders() -> tuple[int, int]:
    with record_comm() as outer:
        dist.all_reduce(torch.ones(4))
        with record_comm() as inner:
            dist.all_reduce(torch.ones(8))
    return outer.total_bytes(), inner.total_bytes()


def captured_reference() -> int:
    """A library that keeps a reference to a torch.distributed function from its start-up (as
    DeepSpeed does) is still seen: spawn installed the hooks before this function ran."""
    captured = dist.all_reduce  # taken before any record_comm in this process
    with record_comm() as log:
        captured(torch.ones(5))
    return log.total_bytes()
