"""An independent single-process re-implementation of a 2-rank AntDT sync run (tests only):
per-rank gradients of the planned index ranges, summed and averaged as DDP over gloo does."""

from __future__ import annotations

import torch
from antdt.job import JobConfig, SyntheticRegression, build_model, sum_mse
from antdt.sharding import ShardConfig, ShardService


def reference_params(
    cfg: JobConfig, shard: ShardConfig, sizes: list[int], steps: int | None = None
) -> list[str]:
    torch.set_num_threads(1)
    svc = ShardService(shard)
    svc.set_sizes(sizes, 0)
    world = len(sizes)
    data = SyntheticRegression(cfg.dataset_size, cfg.features, cfg.seed, getattr(torch, cfg.dtype))
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    step = 0
    while steps is None or step < steps:
        plan = svc.plan_step(step, world)
        if plan.end_of_data:
            break
        grads = []
        for r in range(world):
            model.zero_grad(set_to_none=True)
            x, y = data(plan.indices(r))
            (sum_mse(model(x), y) * (world / plan.global_batch)).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for i, p in enumerate(model.parameters()):
            acc = grads[0][i]
            for g in grads[1:]:
                acc = acc + g[i]
            p.grad = acc / world
        opt.step()
        svc.commit_step(step, plan.generation)
        step += 1
    return [
        float(v).hex()
        for v in torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]).tolist()
    ]


def tiny_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed float64 regression batch of ``n`` rows (5 features) for gradient checks."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return x, y


def tiny_model() -> torch.nn.Module:
    """A fixed float64 MLP (5 -> 6 -> 1) for gradient checks."""
    torch.manual_seed(7)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)
    ).double()
