"""Functions the distributed tests run in every rank (module-level, so spawn can pickle them)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from gmeta.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from gmeta.equivalence import distributed_runs
from gmeta.maml import per_task_losses
from gmeta.metaio import MetaIOLoader, read_header
from gmeta.train import TrainConfig, build_trainer, init_from_env


def equivalence_suite(cfgs: list[TrainConfig], steps: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    return {"runs": distributed_runs(cfgs, steps), "ddp": ddp_negative_control(cfgs[0])}


def _params(tr) -> dict[str, np.ndarray]:
    out = {k: v.detach().numpy().copy() for k, v in tr.model.named_parameters()}
    out["__table__"] = tr.table.full_weight().numpy()
    return out


def checkpoint_suite(cfg: TrainConfig, ckdir: str, total: int, at: int) -> dict[str, Any]:
    """Uninterrupted ``total`` steps vs ``at`` steps + save + fresh trainer + load + the rest."""
    torch.set_num_threads(1)
    rank, world = init_from_env()
    header = read_header(cfg.tasks)

    def loader(start: int):
        return iter(
            MetaIOLoader(
                cfg.tasks,
                cfg.tasks_per_batch,
                rank=rank,
                world=world,
                prefetch=1,
                epochs=None,
                start_batch=start,
            )
        )

    straight = build_trainer(cfg, header)
    it = loader(0)
    for _ in range(total):
        straight.step(next(it))
    first = build_trainer(cfg, header)
    it = loader(0)
    for _ in range(at):
        first.step(next(it))
    save_checkpoint(ckdir, first)
    del first
    resumed = build_trainer(dataclasses.replace(cfg, seed=cfg.seed + 1), header)
    load_checkpoint(latest_checkpoint(ckdir), resumed)
    it = loader(resumed.step_count)
    while resumed.step_count < total:
        resumed.step(next(it))
    opt_equal = all(
        torch.equal(a, b)
        for a, b in zip(
            _flat_state(straight.optimizer.state_dict()),
            _flat_state(resumed.optimizer.state_dict()),
            strict=True,
        )
    )
    return {
        "straight": _params(straight),
        "resumed": _params(resumed),
        "row_state_equal": all(
            torch.equal(straight.table.state[k], resumed.table.state[k])
            for k in straight.table.state
        ),
        "dense_opt_state_equal": opt_equal,
    }


def _flat_state(sd: dict) -> list[torch.Tensor]:
    out = []
    for s in sd["state"].values():
        for v in s.values():
            if isinstance(v, torch.Tensor):
                out.append(v)
    return out


def ddp_negative_control(cfg: TrainConfig) -> float:
    """MAML through ``functional_call(ddp.module, ...)``: DDP's hooks never fire, so the outer
    gradients stay rank-local. Returns the largest gradient difference across ranks (> 0)."""
    rank, world = init_from_env()
    header = read_header(cfg.tasks)
    tr = build_trainer(cfg, header)
    ddp = torch.nn.parallel.DistributedDataParallel(tr.model)
    batch = (
        next(iter(MetaIOLoader(cfg.tasks, cfg.tasks_per_batch, rank=rank, world=world, prefetch=0)))
        .sanitized()
        .to(dtype=torch.float64)
    )
    ids = batch.valid_ids()
    rows, _ = tr.table.lookup(ids)
    params = dict(ddp.module.named_parameters())
    losses = per_task_losses(ddp.module, cfg.maml, params, rows, ids, batch)
    losses.mean().backward()
    g = torch.cat([p.grad.reshape(-1) for p in ddp.module.parameters()])
    ref = g.clone()
    dist.broadcast(ref, src=0)
    diff = torch.tensor([float((g - ref).abs().max())], dtype=torch.float64)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
