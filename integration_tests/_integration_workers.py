"""Functions run inside spawned ranks by the integration tests (module level, so they pickle)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from shared import get_info, make_node_groups, record_comm


def hierarchical_all_reduce(numel: int) -> dict:
    """A two-level all-reduce (intra reduce-scatter, inter all-reduce, intra all-gather) over
    2 "nodes" of 2 ranks, checked against a flat all_reduce, with every byte accounted."""
    info = get_info()
    groups = make_node_groups(2)
    torch.manual_seed(info.rank)
    x = torch.randn(numel, dtype=torch.float64)
    flat = x.clone()
    with record_comm() as log:
        dist.all_reduce(flat)
        shard = torch.empty(numel // 2, dtype=torch.float64)
        dist.reduce_scatter_tensor(shard, x.clone(), group=groups.intra)
        dist.all_reduce(shard, group=groups.inter)
        out = torch.empty(numel, dtype=torch.float64)
        dist.all_gather_into_tensor(out, shard, group=groups.intra)
    return {
        "max_err": (out - flat).abs().max().item(),
        "ops": [(o.kind, o.nbytes, o.group_ranks) for o in log.ops],
        "intra": log.total_bytes(group=groups.intra_ranks),
        "inter": log.total_bytes(group=groups.inter_ranks),
        "world": log.total_bytes(group=tuple(range(info.world_size))),
    }


def cuda_collectives(numel: int) -> dict:
    """On a GPU rank (nccl): all_reduce/all_gather on CUDA tensors, with byte accounting."""
    info = get_info()
    x = torch.full((numel,), float(info.rank + 1), device=info.device)
    with record_comm() as log:
        dist.all_reduce(x)
        out = torch.empty(numel * info.world_size, device=info.device)
        dist.all_gather_into_tensor(out, x)
    torch.cuda.synchronize()
    return {
        "backend": info.backend,
        "device": str(info.device),
        "sum": x[0].item(),
        "gathered": out[0].item(),
        "bytes": [o.nbytes for o in log.ops],
    }
