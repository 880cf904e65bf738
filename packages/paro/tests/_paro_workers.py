"""Module-level functions run by shared.spawn in the distributed tests."""

from __future__ import annotations

import torch
import torch.distributed as dist
from paro.accounting import scope_bytes
from paro.cost import allreduce_volume
from paro.horing import hierarchical_all_reduce_, ho_ring_all_reduce_, ring_all_reduce_
from paro.topology import Topology, build_groups

from shared import record_comm


def horing_checks(group_size: int, sizes: list[int]) -> dict:
    """HO-Ring, flat ring and hierarchical all-reduce vs dist.all_reduce, plus byte accounting."""
    rank, world = dist.get_rank(), dist.get_world_size()
    topo = Topology(world, group_size)
    groups = build_groups(group_size)
    out: dict = {"exact": [], "close": [], "bytes": {}}
    for numel in sizes:
        gen = torch.Generator().manual_seed(1000 + 17 * rank + numel)
        ints = torch.randint(-50, 50, (numel,), generator=gen).float()
        ref = ints.clone()
        dist.all_reduce(ref)
        a, b = ints.clone(), ints.clone()
        with record_comm() as log:
            ho_ring_all_reduce_(a, topo)
        ring_all_reduce_(b)
        p = ints.clone()
        ho_ring_all_reduce_(p, topo, 3)  # pipelined: 3 staggered pieces
        out["exact"].append(
            (numel, torch.equal(a, ref) and torch.equal(p, ref), torch.equal(b, ref))
        )
        out["bytes"][numel] = scope_bytes(log, topo)
        out["steps"] = len(log.filter("isend"))
        real = torch.randn(numel, generator=gen)
        ref = real.clone()
        dist.all_reduce(ref)
        c = real.clone()
        ho_ring_all_reduce_(c, topo)
        out["close"].append((numel, torch.allclose(c, ref, rtol=1e-5, atol=1e-5)))
    # 2-D tensor, numel divisible by m: hierarchical form
    x = torch.arange(24, dtype=torch.float32).view(4, 6) * (rank + 1)
    ref = x.clone()
    dist.all_reduce(ref)
    hierarchical_all_reduce_(x, groups)
    out["hier_equal"] = torch.equal(x, ref)
    out["model"] = allreduce_volume(4 * 4096, topo, "horing")
    try:
        build_groups(3)
    except ValueError as e:
        out["bad_group_error"] = str(e)
    return out


def engine_errors() -> dict:
    """Misuse of the engine gets clear errors (run on 4 ranks)."""
    from paro.engine import ParoDataParallel
    from torch import nn

    out = {}
    groups = build_groups(2)
    model = nn.Linear(4, 3)
    eng = ParoDataParallel(model, lambda ps: torch.optim.SGD(ps, lr=0.1), "NIG", groups=groups)
    try:
        eng.step()
    except RuntimeError as e:
        out["step_early"] = str(e)
    loss = eng(torch.ones(2, 4)).sum()
    eng.backward(loss)
    try:
        eng.backward(eng(torch.ones(2, 4)).sum())
    except RuntimeError as e:
        out["too_many"] = str(e)
    eng.step()
    # a user's zero_grad(set_to_none=True) must not detach .grad from the engine's buffer
    before = eng.full_parameters()
    model.zero_grad()
    eng.backward(eng(torch.ones(2, 4)).sum())
    eng.step()
    out["after_zero_grad"] = not torch.equal(before, eng.full_parameters())
    try:
        ParoDataParallel(nn.Linear(2, 2), lambda ps: None, "GGG", groups=groups)
    except TypeError as e:
        out["bad_factory"] = str(e)
    try:
        ParoDataParallel(
            nn.Linear(2, 2), lambda ps: torch.optim.SGD(ps, lr=1), "NGN", groups=groups
        )
    except ValueError as e:
        out["bad_strategy"] = str(e)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    try:
        ParoDataParallel(frozen, lambda ps: torch.optim.SGD(ps, lr=1), "GGG", groups=groups)
    except ValueError as e:
        out["no_trainable"] = str(e)
    # the optimizer's flat parameter aliases the parameter buffer (no hidden copy)
    m2 = nn.Linear(3, 5)
    e2 = ParoDataParallel(m2, lambda ps: torch.optim.SGD(ps, lr=1.0), "NNG", groups=groups)
    out["alias"] = (
        e2._masters[0].untyped_storage().data_ptr() == m2.weight.untyped_storage().data_ptr()
    )
    return out


def horing_and_errors(group_size: int, sizes: list[int]) -> dict:
    out = horing_checks(group_size, sizes)
    out["errors"] = engine_errors()
    return out


def suite_exact(cfg, group_size: int, sizes: list[int]) -> dict:
    """One spawn: exact-data strategy runs + HO-Ring checks + engine errors."""
    from paro.experiment import run_strategies

    out = {"runs": run_strategies(cfg)}
    out.update(horing_and_errors(group_size, sizes))
    return out


def suite_many(cfgs: list) -> list:
    """One spawn: several run_strategies configurations."""
    from paro.experiment import run_strategies

    return [run_strategies(c) for c in cfgs]
