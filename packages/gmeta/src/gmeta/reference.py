"""Single-process reference MAML: the oracle the distributed trainer must equal.

Written independently of :mod:`gmeta.maml` and :mod:`gmeta.trainer`: one full
``[num_rows, D]`` table as a parameter, a Python loop over tasks, inner steps with
``torch.autograd.grad(create_graph=not first_order)`` on the *full* table when embeddings are
adapted, ``loss.mean().backward()``, and stock torch optimisers (``SGD``/``Adagrad`` on the dense
table, ``SparseAdam`` with a sparse gradient of the touched rows for Adam). No vmap, no
localisation, no sharding, no collectives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gmeta.embedding import init_rows
from gmeta.maml import MAMLConfig, make_optimizer
from gmeta.tasks import TaskBatch

__all__ = ["ReferenceMAML"]


class ReferenceMAML:
    """MAML on one process with the whole table (float64 recommended for equivalence checks)."""

    def __init__(
        self,
        model: nn.Module,
        num_rows: int,
        cfg: MAMLConfig,
        *,
        seed: int = 0,
        init_std: float = 0.1,
    ) -> None:
        self.model, self.cfg = model, cfg
        dtype = next(model.parameters()).dtype
        self.table = nn.Parameter(
            init_rows(
                torch.arange(num_rows),
                model.cfg.embedding_dim,
                seed=seed,
                std=init_std,
                dtype=dtype,
            )
        )
        self.dense_opt = make_optimizer(cfg.outer_optimizer, model.parameters(), cfg.outer_lr, cfg)
        self.sparse = cfg.emb_optimizer == "adam"
        self.table_opt = make_optimizer(
            cfg.emb_optimizer, [self.table], cfg.emb_lr, cfg, sparse=self.sparse
        )

    def _loss(self, dense: dict, table: torch.Tensor, sparse, x, y, m) -> torch.Tensor:
        logits = functional_call(self.model, dense, (x, table[sparse]))
        per = F.binary_cross_entropy_with_logits(logits[m], y[m], reduction="none")
        return per.mean()

    def task_loss(self, b: TaskBatch, t: int) -> torch.Tensor:
        cfg = self.cfg
        params = dict(self.model.named_parameters())
        s = (b.s_sparse[t], b.s_dense[t], b.s_label[t], b.s_mask[t])
        q = (b.q_sparse[t], b.q_dense[t], b.q_label[t], b.q_mask[t])
        if cfg.algorithm == "pooled":
            logits = torch.cat(
                [
                    functional_call(self.model, params, (s[1], self.table[s[0]])),
                    functional_call(self.model, params, (q[1], self.table[q[0]])),
                ]
            )
            y = torch.cat([s[2], q[2]])
            m = torch.cat([s[3], q[3]])
            return F.binary_cross_entropy_with_logits(logits[m], y[m])
        names = cfg.adapted_keys(list(params))
        fast = {k: params[k] for k in names}
        table = self.table
        for _ in range(cfg.inner_steps):
            dense = {**params, **fast}
            loss = self._loss(dense, table, *s)
            wrt = list(fast.values()) + ([table] if cfg.adapts_embeddings else [])
            gs = torch.autograd.grad(
                loss,
                wrt,
                create_graph=not cfg.first_order,
                allow_unused=True,
                materialize_grads=True,
            )
            if cfg.first_order:
                gs = [g.detach() for g in gs]
            fast = {k: fast[k] - cfg.inner_lr * g for k, g in zip(names, gs, strict=False)}
            if cfg.adapts_embeddings:
                table = table - cfg.inner_lr * gs[-1]
        return self._loss({**params, **fast}, table, *q)

    def touched_rows(self, b: TaskBatch) -> torch.Tensor:
        """Rows whose gradient the outer step applies (first order: rows of valid query rows)."""
        q = b.q_sparse[b.q_mask].reshape(-1)
        s = b.s_sparse[b.s_mask].reshape(-1)
        fo = self.cfg.first_order and self.cfg.algorithm == "maml" and self.cfg.inner_steps > 0
        return torch.unique(q if fo else torch.cat([s, q]))

    def step(self, b: TaskBatch) -> float:
        """One outer step on the whole (global) batch; returns the mean query loss."""
        dtype = self.table.dtype
        b = b.to(dtype=dtype)
        losses = torch.stack([self.task_loss(b, t) for t in range(b.num_tasks)])
        loss = losses.mean()
        self.dense_opt.zero_grad(set_to_none=True)
        self.table_opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.sparse:
            rows = self.touched_rows(b)
            g = self.table.grad
            self.table.grad = torch.sparse_coo_tensor(
                rows.unsqueeze(0), g[rows], size=g.shape, check_invariants=True
            ).coalesce()
        self.dense_opt.step()
        self.table_opt.step()
        return float(loss.detach())

    def predict(self, b: TaskBatch, *, adapt: bool = True) -> torch.Tensor:
        """Query click probabilities ``[T, Q]`` after adapting each task (first-order arithmetic)."""
        b = b.to(dtype=self.table.dtype)
        out = []
        for t in range(b.num_tasks):
            params = {k: v.detach() for k, v in self.model.named_parameters()}
            names = self.cfg.adapted_keys(list(params))
            fast = {k: params[k].clone().requires_grad_(True) for k in names}
            table = self.table.detach().clone().requires_grad_(self.cfg.adapts_embeddings)
            s = (b.s_sparse[t], b.s_dense[t], b.s_label[t], b.s_mask[t])
            steps = self.cfg.inner_steps if adapt and self.cfg.algorithm == "maml" else 0
            for _ in range(steps):
                loss = self._loss({**params, **fast}, table, *s)
                wrt = list(fast.values()) + ([table] if self.cfg.adapts_embeddings else [])
                gs = torch.autograd.grad(loss, wrt, allow_unused=True, materialize_grads=True)
                fast = {
                    k: (fast[k] - self.cfg.inner_lr * g).detach().requires_grad_(True)
                    for k, g in zip(names, gs, strict=False)
                }
                if self.cfg.adapts_embeddings:
                    table = (table - self.cfg.inner_lr * gs[-1]).detach().requires_grad_(True)
            with torch.no_grad():
                logits = functional_call(
                    self.model, {**params, **fast}, (b.q_dense[t], table[b.q_sparse[t]])
                )
            out.append(torch.sigmoid(logits))
        return torch.stack(out)
