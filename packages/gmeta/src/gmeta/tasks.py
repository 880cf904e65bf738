"""Meta-learning tasks as fixed-shape tensors (what Meta-IO yields and the trainers consume).

A *task* (a user, or a user in one scenario) has a support set of ``K`` examples for inner-loop
adaptation and a query set of ``Q`` examples for the outer loss (G-Meta Sec. 3.1). Fixed ``K`` and
``Q`` with validity masks make a batch of tasks one set of dense tensors, so the inner loop can be
``vmap``-ed over tasks. Each example has ``F`` sparse ids (global row ids of the one fused
embedding table, field offsets already applied), ``Dd`` dense features and a 0/1 label.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

__all__ = ["TaskBatch", "split_counts"]

_SETS = ("support", "query")
_PARTS = ("sparse", "dense", "label", "mask")


@dataclass(frozen=True)
class TaskBatch:
    """``T`` tasks: ids ``[T]``; per set (s = support, K rows; q = query, Q rows) sparse ids
    ``[T, n, F]`` int64, dense ``[T, n, Dd]`` float, labels ``[T, n]`` float, masks ``[T, n]`` bool.
    Masked-out rows are padding; every task has at least one valid support and query row."""

    task_id: torch.Tensor
    s_sparse: torch.Tensor
    s_dense: torch.Tensor
    s_label: torch.Tensor
    s_mask: torch.Tensor
    q_sparse: torch.Tensor
    q_dense: torch.Tensor
    q_label: torch.Tensor
    q_mask: torch.Tensor

    def __post_init__(self) -> None:
        t = self.task_id.shape[0] if self.task_id.dim() == 1 else -1
        if t < 0 or self.task_id.dtype != torch.int64:
            raise ValueError("task_id must be a 1-D int64 tensor")
        for p in ("s", "q"):
            sp, de, la, ma = (getattr(self, f"{p}_{x}") for x in _PARTS)
            name = "support" if p == "s" else "query"
            if sp.dim() != 3 or sp.dtype != torch.int64 or sp.shape[0] != t:
                raise ValueError(
                    f"{name} sparse ids must be int64 [T, n, F], got {tuple(sp.shape)}"
                )
            n = sp.shape[1]
            if de.dim() != 3 or de.shape[:2] != (t, n) or not de.is_floating_point():
                raise ValueError(f"{name} dense features must be float [T, {n}, Dd]")
            if la.shape != (t, n) or ma.shape != (t, n) or ma.dtype != torch.bool:
                raise ValueError(f"{name} labels/mask must be [T, {n}] (mask bool)")
            if t and not bool(ma.any(1).all()):
                raise ValueError(f"every task needs at least one valid {name} example")
        if self.s_sparse.shape[2] != self.q_sparse.shape[2]:
            raise ValueError("support and query have different numbers of sparse fields")
        if self.s_dense.shape[2] != self.q_dense.shape[2]:
            raise ValueError("support and query have different numbers of dense features")

    # ------------------------------------------------------------------ shape
    @property
    def num_tasks(self) -> int:
        return int(self.task_id.shape[0])

    @property
    def k(self) -> int:
        return int(self.s_sparse.shape[1])

    @property
    def q(self) -> int:
        return int(self.q_sparse.shape[1])

    @property
    def num_fields(self) -> int:
        return int(self.s_sparse.shape[2])

    @property
    def num_dense(self) -> int:
        return int(self.s_dense.shape[2])

    def __len__(self) -> int:
        return self.num_tasks

    # ------------------------------------------------------------------ transforms
    def _map(self, fn) -> TaskBatch:
        return TaskBatch(**{f.name: fn(f.name, getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move to ``device``; cast dense features and labels to ``dtype``."""

        def f(name: str, x: torch.Tensor) -> torch.Tensor:
            if dtype is not None and x.is_floating_point():
                x = x.to(dtype)
            return x.to(device) if device is not None else x

        return self._map(f)

    def slice(self, start: int, end: int) -> TaskBatch:
        """Tasks ``start:end``."""
        return self._map(lambda _n, x: x[start:end])

    def sanitized(self) -> TaskBatch:
        """Padding rows replaced by a copy of the task's first valid row (mask stays False).

        Padding then adds no new ids to the embedding lookup, and its loss weight is zero, so it
        changes neither the result nor which rows are touched.
        """
        out = {}
        for p in ("s", "q"):
            mask = getattr(self, f"{p}_mask")
            first = mask.to(torch.int64).argmax(1)  # first valid row of every task
            idx = torch.arange(mask.shape[0])
            for part in ("sparse", "dense", "label"):
                x = getattr(self, f"{p}_{part}")
                ref = x[idx, first].unsqueeze(1).expand_as(x)
                m = mask.reshape(*mask.shape, *([1] * (x.dim() - 2)))
                out[f"{p}_{part}"] = torch.where(m, x, ref)
            out[f"{p}_mask"] = mask
        return TaskBatch(task_id=self.task_id, **out)

    def valid_ids(self, which: str = "all") -> torch.Tensor:
        """Sorted unique sparse ids of valid rows (``which``: support, query or all)."""
        parts = []
        if which in ("support", "all"):
            parts.append(self.s_sparse[self.s_mask].reshape(-1))
        if which in ("query", "all"):
            parts.append(self.q_sparse[self.q_mask].reshape(-1))
        if which not in ("support", "query", "all"):
            raise ValueError(f"which must be support, query or all, got {which!r}")
        return torch.unique(torch.cat(parts)) if parts else torch.zeros(0, dtype=torch.int64)

    @staticmethod
    def concat(batches: list[TaskBatch]) -> TaskBatch:
        if not batches:
            raise ValueError("nothing to concatenate")
        return TaskBatch(
            **{f.name: torch.cat([getattr(b, f.name) for b in batches]) for f in fields(batches[0])}
        )

    @staticmethod
    def empty_like(b: TaskBatch) -> TaskBatch:
        return b.slice(0, 0)


def split_counts(n: int, world: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each rank's share of ``n`` tasks: contiguous, sizes differ by at most
    one, the first ``n % world`` ranks take one more (``numpy.array_split``)."""
    if world < 1 or n < 0:
        raise ValueError(f"need n >= 0 and world >= 1, got n={n}, world={world}")
    sizes = np.full(world, n // world)
    sizes[: n % world] += 1
    ends = np.cumsum(sizes)
    return [(int(e - s), int(e)) for s, e in zip(sizes, ends, strict=True)]
