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


def paro_engine_matches_plain_training(strategy: str, steps: int) -> float:
    """One rank per device: the PaRO engine's parameters after ``steps`` AdamW steps equal plain
    single-process training of the same model (world 1: every strategy degenerates to DDP)."""
    import copy

    from paro import ParoDataParallel, build_groups

    info = get_info()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)
    ).to(info.device)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    engine = ParoDataParallel(
        model,
        lambda ps: torch.optim.AdamW(ps, lr=1e-2),
        strategy,
        groups=build_groups(group_size=1),
        accum_steps=2,
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ref_opt.zero_grad()
        for _ in range(2):
            x = torch.randn(8, 16, generator=g).to(info.device)
            y = torch.randn(8, 4, generator=g).to(info.device)
            engine.backward(torch.nn.functional.mse_loss(engine(x), y))
            (torch.nn.functional.mse_loss(ref(x), y) / 2).backward()
        engine.step()
        ref_opt.step()
    flat_ref = torch.cat([p.detach().reshape(-1) for p in ref.parameters()])
    got = engine.full_parameters()
    return ((got - flat_ref).abs().max() / flat_ref.abs().max()).item()
