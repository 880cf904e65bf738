"""Hybrid-parallel meta-trainer: G-Meta's distributed inner/outer loop (Sec. 3.2).

One outer step on every rank, with this rank's tasks (whole tasks, support and query together):

1. **lookup** (communication): deduplicate the ids of all local tasks, fetch their rows from the
   owners (:meth:`RowShardedEmbedding.lookup`, three all-to-alls);
2. **compute** (no communication): for every local task the inner loop on its support set and the
   query loss after adaptation (vmap over tasks), then one backward;
3. **sync** (communication): one SUM all-reduce of the flat dense gradient with the local loss sum
   and task count appended, division by the global task count (uneven counts per rank weigh every
   task equally), the dense optimiser step; the embedding-row gradients go back to their owners
   (one all-to-all) who apply the row optimiser.

DDP is deliberately not used: calling ``functional_call`` on ``ddp.module`` bypasses DDP's hooks
(gradients are silently not synchronised) and double backward through DDP is unsupported; the
explicit all-reduce after the outer backward is what G-Meta does.

Every phase's collectives are recorded with :func:`shared.record_comm` in :attr:`last_comm`
(``lookup``, ``compute``, ``sync``), so tests and benchmarks can check the byte formula
(:func:`comm_bytes_formula`) and that ``compute``, which holds every inner loop, is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gmeta.embedding import RowOptimizerConfig, RowShardedEmbedding
from gmeta.maml import MAMLConfig, localize, make_optimizer, meta_loss_and_grads
from gmeta.tasks import TaskBatch
from shared import CommLog, record_comm

__all__ = ["MetaTrainer", "StepStats", "comm_bytes_formula", "row_optimizer_for"]


def row_optimizer_for(cfg: MAMLConfig) -> RowOptimizerConfig:
    """The row-wise optimiser config matching a :class:`MAMLConfig`'s embedding settings."""
    kind = cfg.emb_optimizer
    eps = cfg.adagrad_eps if kind == "adagrad" else cfg.adam_eps
    return RowOptimizerConfig(kind=kind, lr=cfg.emb_lr, eps=eps, betas=cfg.adam_betas)


def comm_bytes_formula(
    *,
    world: int,
    n_ids: int,
    n_served: int,
    n_grad: int,
    dense_numel: int,
    dim: int,
    itemsize: int,
) -> dict[str, int]:
    """Bytes one rank hands to collectives in one outer step (``shared.record_comm``'s ``nbytes``).

    ``n_ids``: unique ids this rank looks up; ``n_served``: ids other ranks (and itself) asked this
    rank for; ``n_grad``: looked-up rows whose gradient goes back (first order: query rows only).

    ===========  ======================================  =====
    op           payload                                 phase
    ===========  ======================================  =====
    a2a counts   ``2 W`` int64                           lookup
    a2a ids      ``n_ids`` int64                         lookup
    a2a rows     ``n_served x dim`` values               lookup
    all-reduce   ``dense_numel + 2`` values (+ loss,T)   sync
    a2a grads    ``n_grad x dim`` values                 sync
    ===========  ======================================  =====
    """
    return {
        "counts": 2 * world * 8,
        "ids": n_ids * 8,
        "rows": n_served * dim * itemsize,
        "allreduce": (dense_numel + 2) * itemsize,
        "grads": n_grad * dim * itemsize,
    }


@dataclass(frozen=True)
class StepStats:
    """One outer step: mean query loss over the global batch, global and local task counts,
    unique ids this rank looked up, rows whose gradients it returned, bytes per phase."""

    step: int
    loss: float
    tasks: int
    local_tasks: int
    n_ids: int
    n_grad: int
    comm_bytes: dict[str, int]


class MetaTrainer:
    """Distributed MAML over a row-sharded table and a replicated dense model.

    All ranks of ``group`` must call :meth:`step` (and :meth:`predict`) the same number of times;
    a rank with no tasks in a step passes an empty batch. Dense parameters must start equal on
    every rank (same seed); :meth:`check_replicas` verifies it.
    """

    def __init__(
        self,
        model: nn.Module,
        table: RowShardedEmbedding,
        cfg: MAMLConfig,
        *,
        group: Any = None,
    ) -> None:
        if table.dim != model.cfg.embedding_dim:
            raise ValueError(
                f"embedding dim {table.dim} != model embedding_dim {model.cfg.embedding_dim}"
            )
        expect = row_optimizer_for(cfg)
        if table.optimizer != expect:
            raise ValueError(
                f"the table's row optimizer {table.optimizer} does not match the config's "
                f"embedding optimizer {expect}; build it with row_optimizer_for(cfg)"
            )
        self.model, self.table, self.cfg, self.group = model, table, cfg, group
        self.distributed = table.distributed
        self.dtype = next(model.parameters()).dtype
        if table.dtype != self.dtype:
            raise ValueError(f"table dtype {table.dtype} != model dtype {self.dtype}")
        self.device = table.device
        self.optimizer = make_optimizer(cfg.outer_optimizer, model.parameters(), cfg.outer_lr, cfg)
        self.step_count = 0
        self.last_comm: dict[str, CommLog] = {}

    # ------------------------------------------------------------------ helpers
    def _prepare(self, batch: TaskBatch) -> TaskBatch:
        if batch.num_fields != self.model.cfg.num_fields:
            raise ValueError(
                f"batch has {batch.num_fields} sparse fields, the model {self.model.cfg.num_fields}"
            )
        if batch.num_dense != self.model.cfg.num_dense:
            raise ValueError(
                f"batch has {batch.num_dense} dense features, the model {self.model.cfg.num_dense}"
            )
        return batch.sanitized().to(self.device, self.dtype)

    def grad_ids(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The lookup's unique ids and which of them carry a gradient in this config."""
        ids = batch.valid_ids("all")
        if self.cfg.first_order and self.cfg.algorithm == "maml" and self.cfg.inner_steps > 0:
            gmask = torch.isin(ids, batch.valid_ids("query"))
        else:
            gmask = torch.ones_like(ids, dtype=torch.bool)
        return ids, gmask

    def _all_reduce(self, flat: torch.Tensor) -> None:
        if self.distributed:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)

    # ------------------------------------------------------------------ training
    def step(self, batch: TaskBatch) -> StepStats:
        """One outer step with this rank's tasks (collective)."""
        batch = self._prepare(batch)
        ids, gmask = self.grad_ids(batch)
        ids = ids.to(self.device)
        with record_comm() as c_lookup:
            rows, handle = self.table.lookup(ids, gmask)
        with record_comm() as c_compute:
            loss_sum, dgrads, rgrad = meta_loss_and_grads(self.model, self.cfg, rows, ids, batch)
        params = dict(self.model.named_parameters())
        with record_comm() as c_sync:
            flat = torch.cat(
                [dgrads[k].reshape(-1) for k in params]
                + [
                    loss_sum.reshape(1).to(self.dtype),
                    torch.tensor([batch.num_tasks], dtype=self.dtype, device=self.device),
                ]
            )
            self._all_reduce(flat)
            total_tasks = round(float(flat[-1]))
            if total_tasks == 0:
                raise ValueError("the global batch holds no tasks on any rank")
            if not torch.isfinite(flat).all():
                raise FloatingPointError(
                    f"non-finite meta-gradient at step {self.step_count}; nothing was applied"
                )
            off = 0
            for _k, p in params.items():
                n = p.numel()
                p.grad = (flat[off : off + n] / total_tasks).view_as(p).clone()
                off += n
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.table.push_grads(handle, rgrad, scale=1.0 / total_tasks)
        self.last_comm = {"lookup": c_lookup, "compute": c_compute, "sync": c_sync}
        self.step_count += 1
        return StepStats(
            step=self.step_count,
            loss=float(flat[-2]) / total_tasks,
            tasks=total_tasks,
            local_tasks=batch.num_tasks,
            n_ids=len(ids),
            n_grad=int(gmask.sum()),
            comm_bytes={k: v.total_bytes() for k, v in self.last_comm.items()},
        )

    # ------------------------------------------------------------------ evaluation
    def predict(self, batch: TaskBatch, *, adapt: bool = True) -> torch.Tensor:
        """Click probabilities ``[T, Q]`` on each local task's query set after adapting to its
        support set (``adapt=False``: with the meta-parameters as they are). Collective (lookup)."""
        batch = self._prepare(batch)
        ids = batch.valid_ids("all").to(self.device)
        rows, _ = self.table.lookup(ids, torch.zeros_like(ids, dtype=torch.bool))
        rows = rows.detach()
        if batch.num_tasks == 0:
            return torch.zeros(0, batch.q, dtype=self.dtype)
        cfg = self.cfg
        if not adapt or cfg.algorithm == "pooled":
            import dataclasses

            cfg = dataclasses.replace(cfg, inner_steps=0, algorithm="maml")
        task_rows, s_idx, q_idx = localize(batch, ids)
        params = {k: v.detach() for k, v in self.model.named_parameters()}
        out = []
        for t in range(batch.num_tasks):
            out.append(
                _query_logits(
                    self.model,
                    cfg,
                    params,
                    rows,
                    task_rows[t],
                    s_idx[t],
                    batch.s_dense[t],
                    batch.s_label[t],
                    batch.s_mask[t],
                    q_idx[t],
                    batch.q_dense[t],
                )
            )
        return torch.sigmoid(torch.stack(out))

    def check_replicas(self) -> float:
        """Max difference of the dense parameters between this rank and rank 0 (collective)."""
        flat = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        if not self.distributed:
            return 0.0
        ref = flat.clone()
        src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        dist.broadcast(ref, src=src, group=self.group)
        return float((flat - ref).abs().max())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Dense parameters, dense optimiser state, step (the table's shard is saved apart)."""
        return {
            "step": self.step_count,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])


def _query_logits(model, cfg, params, rows, task_rows, s_idx, s_x, s_y, s_m, q_idx, q_x):
    """Query logits of one task after its inner loop (evaluation; first-order arithmetic)."""
    from torch.func import functional_call, grad

    from gmeta.maml import EMB, masked_bce

    table = rows[task_rows]
    names = list(params)
    fast = {k: params[k] for k in cfg.adapted_keys(names)}
    if cfg.adapts_embeddings:
        fast[EMB] = table
    frozen = {k: v for k, v in params.items() if k not in fast}

    def support_loss(fast):
        dense = {**frozen, **{k: v for k, v in fast.items() if k != EMB}}
        tab = fast.get(EMB, table)
        return masked_bce(functional_call(model, dense, (s_x, tab[s_idx])), s_y, s_m)

    for _ in range(cfg.inner_steps):
        g = grad(support_loss)(fast)
        fast = {k: (fast[k] - cfg.inner_lr * g[k]).detach() for k in fast}
    dense = {**frozen, **{k: v for k, v in fast.items() if k != EMB}}
    tab = fast.get(EMB, table)
    return functional_call(model, dense, (q_x, tab[q_idx])).detach()
