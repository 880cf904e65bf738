"""Equivalence and communication checks: distributed runs against the single-process reference.

:func:`distributed_run` is what every rank executes (through :func:`shared.spawn` or
``torchrun``); :func:`reference_run` trains :class:`gmeta.reference.ReferenceMAML` on the same
global batches; :func:`predicted_comm` computes, from the task file alone (not from the trainer),
the bytes each rank must hand to collectives in each step according to
:func:`gmeta.trainer.comm_bytes_formula`. Tests and the benchmark compare the three.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from gmeta.metaio import MetaIOLoader, read_header
from gmeta.model import DLRM, DLRMConfig
from gmeta.reference import ReferenceMAML
from gmeta.tasks import TaskBatch
from gmeta.train import DTYPES, TrainConfig, build_trainer, init_from_env
from gmeta.trainer import comm_bytes_formula

__all__ = [
    "distributed_run",
    "distributed_runs",
    "max_abs_diff",
    "predicted_comm",
    "reference_run",
    "task_file_for_tests",
]


def _phase_summary(log) -> dict[str, Any]:
    return {
        "ops": [(o.kind, o.nbytes) for o in log.ops],
        "bytes": log.total_bytes(),
    }


def distributed_run(cfg: TrainConfig, steps: int, *, threads: int = 1) -> dict[str, Any]:
    """Train ``steps`` outer steps on this rank's shares; return the final dense parameters, the
    gathered full table, and per-step statistics (loss, tasks, ids, collectives per phase)."""
    torch.set_num_threads(threads)
    rank, world = init_from_env()
    header = read_header(cfg.tasks)
    trainer = build_trainer(cfg, header)
    loader = MetaIOLoader(
        cfg.tasks, cfg.tasks_per_batch, rank=rank, world=world, prefetch=0, epochs=None
    )
    it = iter(loader)
    stats = []
    for _ in range(steps):
        st = trainer.step(next(it))
        stats.append(
            {
                "loss": st.loss,
                "tasks": st.tasks,
                "local_tasks": st.local_tasks,
                "n_ids": st.n_ids,
                "n_grad": st.n_grad,
                "phases": {k: _phase_summary(v) for k, v in trainer.last_comm.items()},
            }
        )
    dense = {k: v.detach().cpu().numpy() for k, v in trainer.model.named_parameters()}
    return {
        "rank": rank,
        "world": world,
        "dense": dense,
        "table": trainer.table.full_weight().numpy(),
        "replica_diff": trainer.check_replicas(),
        "stats": stats,
    }


def distributed_runs(cfgs: list[TrainConfig], steps: int) -> list[dict[str, Any]]:
    """:func:`distributed_run` for several configs in the same processes (one start-up)."""
    return [distributed_run(c, steps) for c in cfgs]


def reference_run(cfg: TrainConfig, steps: int) -> dict[str, Any]:
    """The same run with :class:`ReferenceMAML` on one process (whole global batches)."""
    header = read_header(cfg.tasks)
    dtype = DTYPES[cfg.dtype]
    mcfg = DLRMConfig(
        num_fields=header["num_fields"],
        embedding_dim=cfg.embedding_dim,
        num_dense=header["num_dense"],
        bottom=cfg.bottom,
        top=cfg.top,
    )
    torch.manual_seed(cfg.seed)
    model = DLRM(mcfg).to(dtype)
    ref = ReferenceMAML(
        model, int(header["num_rows"]), cfg.maml, seed=cfg.seed, init_std=cfg.init_std
    )
    it = iter(MetaIOLoader(cfg.tasks, cfg.tasks_per_batch, prefetch=0, epochs=None))
    losses = [ref.step(next(it)) for _ in range(steps)]
    return {
        "dense": {k: v.detach().numpy() for k, v in model.named_parameters()},
        "table": ref.table.detach().numpy(),
        "losses": losses,
    }


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Largest absolute difference of the dense parameters and of the table."""
    dd = max(float(np.abs(a["dense"][k] - b["dense"][k]).max()) for k in b["dense"])
    dt = float(np.abs(a["table"] - b["table"]).max())
    return {"dense": dd, "table": dt, "max": max(dd, dt)}


def predicted_comm(cfg: TrainConfig, steps: int, world: int) -> list[list[dict[str, int]]]:
    """``[step][rank]`` -> the formula's bytes per op, from the task file and the sharding rule
    alone: each rank's share of each global batch, its unique valid ids, the ids every rank asks
    each owner for (mod or range sharding), and which rows carry gradients."""
    header = read_header(cfg.tasks)
    n_rows = int(header["num_rows"])
    itemsize = torch.empty((), dtype=DTYPES[cfg.dtype]).element_size()
    torch.manual_seed(cfg.seed)
    mcfg = DLRMConfig(
        header["num_fields"], cfg.embedding_dim, header["num_dense"], cfg.bottom, cfg.top
    )
    dense_numel = sum(p.numel() for p in DLRM(mcfg).parameters())
    per_rank = -(-n_rows // world)

    def owner(ids: torch.Tensor) -> torch.Tensor:
        return ids % world if cfg.sharding == "mod" else ids // per_rank

    loaders = [
        iter(
            MetaIOLoader(
                cfg.tasks, cfg.tasks_per_batch, rank=r, world=world, prefetch=0, epochs=None
            )
        )
        for r in range(world)
    ]
    fo = cfg.maml.first_order and cfg.maml.algorithm == "maml" and cfg.maml.inner_steps > 0
    out = []
    for _ in range(steps):
        batches: list[TaskBatch] = [next(it) for it in loaders]
        ids = [b.valid_ids("all") for b in batches]
        served = [0] * world
        for i in ids:
            for r, c in enumerate(torch.bincount(owner(i), minlength=world).tolist()):
                served[r] += c
        row = []
        for r, b in enumerate(batches):
            n_grad = int(torch.isin(ids[r], b.valid_ids("query")).sum()) if fo else len(ids[r])
            row.append(
                comm_bytes_formula(
                    world=world,
                    n_ids=len(ids[r]),
                    n_served=served[r],
                    n_grad=n_grad,
                    dense_numel=dense_numel,
                    dim=cfg.embedding_dim,
                    itemsize=itemsize,
                )
            )
        out.append(row)
    return out


def task_file_for_tests(
    path: str | Path, *, n_users: int = 60, k: int = 4, q: int = 4, seed: int = 0
) -> str:
    """A small synthetic task file (for tests and the benchmark's equivalence runs)."""
    from gmeta.metaio import FieldSpec, TaskSpec, build_tasks
    from gmeta.synthetic import DENSE_COLUMNS, SyntheticConfig, generate_log, synthetic_fields

    data = generate_log(
        SyntheticConfig(n_users=n_users, n_items=40, seed=seed, interactions_per_user=(6, 14))
    )
    spec = TaskSpec(
        fields=tuple(FieldSpec(c, n) for c, n in synthetic_fields(data.config)),
        dense_columns=DENSE_COLUMNS,
        k=k,
        q=q,
        min_support=2,
    )
    build_tasks(data.log, path, spec, row_group_tasks=16)
    return str(path)
