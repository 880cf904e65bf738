"""MAML for DLRMs with ``torch.func``: the per-task inner loop and the batched meta-loss.

For a task ``t`` with support set ``S_t`` and query set ``Q_t`` (G-Meta Sec. 3.1, after Finn et
al. 2017), with adapted parameters ``psi`` (the dense layers, optionally the task's embedding
rows) and the rest frozen:

    psi_0 = psi
    psi_{s+1} = psi_s - alpha * grad_psi L(S_t; psi_s)       (inner loop, s < inner_steps)
    L_meta = (1/T) sum_t L(Q_t; psi_{inner_steps})            (outer loss)

Second order back-propagates through the inner gradient (Hessian-vector products, via
``torch.func.grad`` nested under ordinary autograd); first order treats each inner gradient as a
constant (``.detach()``). ``L`` is the mean binary cross-entropy over a set's valid rows.

The inner loop of one task reads only tensors on this rank (its rows of the locally looked-up
embedding leaf and the replicated dense parameters): no collective can happen inside it
(G-Meta's "local inner loop"). Tasks are batched with :func:`torch.func.vmap` (fixed ``K``/``Q``
with masks), or looped in Python (``batched=False``, same numbers).

Embedding adaptation is per task and per *row*: each task gathers its own unique rows into a
small task-local table (:func:`localize`), so an id that occurs twice in a task shares one adapted
row, exactly as adapting the full table would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from gmeta.tasks import TaskBatch

__all__ = [
    "ADAPT_CHOICES",
    "MAMLConfig",
    "localize",
    "make_optimizer",
    "make_task_loss",
    "masked_bce",
    "meta_loss_and_grads",
]

ADAPT_CHOICES = ("dense", "top", "dense+emb", "top+emb")
OPTIMIZERS = ("sgd", "adagrad", "adam")
ALGORITHMS = ("maml", "pooled")
EMB = "__embedding_rows__"


def _pos(name: str, v: float) -> None:
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)):
        raise ValueError(f"MAMLConfig.{name} must be a positive finite number, got {v!r}")


@dataclass(frozen=True)
class MAMLConfig:
    """Meta-training settings (validated on construction).

    ``adapt``: which parameters the inner loop adapts: ``dense`` (all dense layers), ``top``
    (the top MLP only, MeLU's "decision layers"), and either plus ``+emb`` (the task's embedding
    rows too). ``algorithm="pooled"`` is the non-meta baseline: the same model and distributed
    machinery, trained on support and query rows pooled, without an inner loop.
    """

    inner_lr: float = 0.1
    inner_steps: int = 1
    first_order: bool = False
    adapt: str = "dense"
    outer_optimizer: str = "adam"
    outer_lr: float = 1e-3
    embedding_optimizer: str | None = None
    embedding_lr: float | None = None
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    adagrad_eps: float = 1e-10
    batched: bool = True
    algorithm: str = "maml"

    def __post_init__(self) -> None:
        _pos("inner_lr", self.inner_lr)
        _pos("outer_lr", self.outer_lr)
        if not isinstance(self.inner_steps, int) or isinstance(self.inner_steps, bool):
            raise ValueError(f"MAMLConfig.inner_steps must be an int, got {self.inner_steps!r}")
        if self.inner_steps < 0:
            raise ValueError(f"MAMLConfig.inner_steps must be >= 0, got {self.inner_steps}")
        if self.adapt not in ADAPT_CHOICES:
            raise ValueError(f"MAMLConfig.adapt must be one of {ADAPT_CHOICES}, got {self.adapt!r}")
        if self.outer_optimizer not in OPTIMIZERS:
            raise ValueError(
                f"MAMLConfig.outer_optimizer must be one of {OPTIMIZERS}, "
                f"got {self.outer_optimizer!r}"
            )
        if self.embedding_optimizer is not None and self.embedding_optimizer not in OPTIMIZERS:
            raise ValueError(
                f"MAMLConfig.embedding_optimizer must be one of {OPTIMIZERS} or None, "
                f"got {self.embedding_optimizer!r}"
            )
        if self.embedding_lr is not None:
            _pos("embedding_lr", self.embedding_lr)
        _pos("adam_eps", self.adam_eps)
        _pos("adagrad_eps", self.adagrad_eps)
        b1, b2 = self.adam_betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"MAMLConfig.adam_betas must be in [0, 1), got {self.adam_betas}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"MAMLConfig.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}"
            )

    @property
    def adapts_embeddings(self) -> bool:
        return self.adapt.endswith("+emb")

    @property
    def emb_optimizer(self) -> str:
        return self.embedding_optimizer or self.outer_optimizer

    @property
    def emb_lr(self) -> float:
        return self.embedding_lr if self.embedding_lr is not None else self.outer_lr

    def adapted_keys(self, names: list[str]) -> list[str]:
        """Dense parameter names the inner loop adapts."""
        if self.adapt.startswith("top"):
            return [n for n in names if n.startswith("top.")]
        return list(names)


def make_optimizer(
    kind: str, params, lr: float, cfg: MAMLConfig, *, sparse: bool = False
) -> torch.optim.Optimizer:
    """The torch optimiser for ``kind`` with the config's hyper-parameters (``sparse`` Adam for a
    table with sparse gradients)."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if kind == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=cfg.adagrad_eps)
    if sparse:
        return torch.optim.SparseAdam(params, lr=lr, betas=cfg.adam_betas, eps=cfg.adam_eps)
    return torch.optim.Adam(params, lr=lr, betas=cfg.adam_betas, eps=cfg.adam_eps)


def masked_bce(logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the rows where ``m`` is true."""
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    mf = m.to(loss.dtype)
    return (loss * mf).sum() / mf.sum()


def localize(
    batch: TaskBatch, unique_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-task local tables over the rows of ``unique_ids`` (sorted; the lookup's id list).

    Returns ``task_rows [T, N]`` (positions in ``unique_ids`` of each task's unique ids, padded
    with a repeat of a used one), and ``s_idx [T, K, F]`` / ``q_idx [T, Q, F]`` indexing the task's
    local table. ``N = (K + Q) F``. Vectorised over tasks.
    """
    t, k, f = batch.s_sparse.shape
    ids = torch.cat([batch.s_sparse.reshape(t, -1), batch.q_sparse.reshape(t, -1)], 1)
    pos = torch.searchsorted(unique_ids, ids)
    if t == 0:
        n = ids.shape[1]
        z = torch.zeros(0, n, dtype=torch.int64, device=ids.device)
        return z, z[:, : k * f].reshape(0, k, f), z[:, k * f :].reshape(0, -1, f)
    srt, perm = pos.sort(dim=1, stable=True)
    new = torch.ones_like(srt, dtype=torch.bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    local_sorted = torch.cumsum(new.to(torch.int64), 1) - 1
    inv = torch.empty_like(local_sorted)
    inv.scatter_(1, perm, local_sorted)
    task_rows = srt[:, :1].expand_as(srt).clone()
    task_rows.scatter_(1, local_sorted, srt)
    return task_rows, inv[:, : k * f].reshape(t, k, f), inv[:, k * f :].reshape(t, -1, f)


def make_task_loss(model: nn.Module, cfg: MAMLConfig) -> Callable[..., torch.Tensor]:
    """The loss of one task as a pure function (to be ``vmap``-ed over tasks).

    ``task_loss(params, rows, task_rows, s_idx, s_x, s_y, s_m, q_idx, q_x, q_y, q_m)``: ``params``
    is the dict of dense parameters, ``rows`` the looked-up embedding rows ``[U, D]`` shared by all
    local tasks, the rest one task's tensors (see :func:`localize`).
    """
    names = [n for n, _ in model.named_parameters()]
    adapted = cfg.adapted_keys(names)
    adapt_emb = cfg.adapts_embeddings
    steps = cfg.inner_steps if cfg.algorithm == "maml" else 0
    alpha, first_order = cfg.inner_lr, cfg.first_order

    def forward(dense: dict, table: torch.Tensor, idx: torch.Tensor, x: torch.Tensor):
        return functional_call(model, dense, (x, table[idx]))

    def support_loss(fast: dict, frozen: dict, table, idx, x, y, m):
        dense = {**frozen, **{k: v for k, v in fast.items() if k != EMB}}
        return masked_bce(forward(dense, fast.get(EMB, table), idx, x), y, m)

    def task_loss(params, rows, task_rows, s_idx, s_x, s_y, s_m, q_idx, q_x, q_y, q_m):
        table = rows[task_rows]
        if cfg.algorithm == "pooled":
            logits = torch.cat(
                [forward(params, table, s_idx, s_x), forward(params, table, q_idx, q_x)]
            )
            return masked_bce(logits, torch.cat([s_y, q_y]), torch.cat([s_m, q_m]))
        fast = {k: params[k] for k in adapted}
        if adapt_emb:
            fast[EMB] = table
        frozen = {k: v for k, v in params.items() if k not in fast}
        for _ in range(steps):
            g = grad(support_loss)(fast, frozen, table, s_idx, s_x, s_y, s_m)
            if first_order:
                g = {k: v.detach() for k, v in g.items()}
            fast = {k: fast[k] - alpha * g[k] for k in fast}
        dense = {**frozen, **{k: v for k, v in fast.items() if k != EMB}}
        return masked_bce(forward(dense, fast.get(EMB, table), q_idx, q_x), q_y, q_m)

    return task_loss


def _task_args(batch: TaskBatch, task_rows, s_idx, q_idx) -> tuple:
    return (
        task_rows,
        s_idx,
        batch.s_dense,
        batch.s_label,
        batch.s_mask,
        q_idx,
        batch.q_dense,
        batch.q_label,
        batch.q_mask,
    )


def per_task_losses(
    model: nn.Module,
    cfg: MAMLConfig,
    params: dict[str, torch.Tensor],
    rows: torch.Tensor,
    unique_ids: torch.Tensor,
    batch: TaskBatch,
) -> torch.Tensor:
    """Query loss of every task after its inner loop, ``[T]`` (vmap, or a loop when not batched)."""
    task_loss = make_task_loss(model, cfg)
    task_rows, s_idx, q_idx = localize(batch, unique_ids)
    args = _task_args(batch, task_rows, s_idx, q_idx)
    if batch.num_tasks == 0:
        return rows.sum() * 0.0 + torch.zeros(0, dtype=rows.dtype, device=rows.device)
    if cfg.batched:
        in_dims = (None, None) + (0,) * len(args)
        return vmap(task_loss, in_dims=in_dims)(params, rows, *args)
    return torch.stack(
        [task_loss(params, rows, *(a[t] for a in args)) for t in range(batch.num_tasks)]
    )


def meta_loss_and_grads(
    model: nn.Module,
    cfg: MAMLConfig,
    rows: torch.Tensor,
    unique_ids: torch.Tensor,
    batch: TaskBatch,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Sum of the local tasks' query losses and its gradients (dense dict, embedding rows).

    Sums, not means: the caller divides by the *global* task count after the all-reduce, so ranks
    with uneven task counts weigh every task equally. Purely local (no collectives).
    """
    params = dict(model.named_parameters())
    if batch.num_tasks == 0:
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return torch.zeros((), dtype=rows.dtype, device=rows.device), zeros, torch.zeros_like(rows)
    losses = per_task_losses(model, cfg, params, rows, unique_ids, batch)
    total = losses.sum()
    leaves = [*params.values(), rows]
    gs = torch.autograd.grad(total, leaves, allow_unused=True, materialize_grads=True)
    dense = dict(zip(params, gs[:-1], strict=True))
    return total.detach(), dense, gs[-1]
