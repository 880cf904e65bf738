"""Ranking metrics (§4.1.3): Recall@K (= hit rate with one target), NDCG@K, MRR.

Everything starts from the 0-based **rank** of the positive among its candidates. Ties (a
candidate scoring exactly like the positive) are ``"pessimistic"`` by default (they rank above
the positive: a model cannot win by giving everything the same score), ``"optimistic"`` or
``"average"`` (half of them above, the expected rank under random tie-breaking).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

__all__ = ["TIES", "metric_table", "mrr", "ndcg_at_k", "rank_of_positive", "recall_at_k"]

TIES = ("pessimistic", "optimistic", "average")


def rank_of_positive(
    pos: torch.Tensor,
    neg: torch.Tensor,
    valid: torch.Tensor | None = None,
    ties: str = "pessimistic",
) -> torch.Tensor:
    """0-based rank of ``pos`` [E] among ``neg`` [E, n]; ``valid`` [E, n] masks padded slots."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if neg.ndim != 2 or pos.shape[0] != neg.shape[0]:
        raise ValueError(f"shapes do not match: pos {tuple(pos.shape)}, neg {tuple(neg.shape)}")
    if valid is None:
        valid = torch.ones_like(neg, dtype=torch.bool)
    p = pos[:, None]
    above = ((neg > p) & valid).sum(1).to(torch.float64)
    tied = ((neg == p) & valid).sum(1).to(torch.float64)
    if ties == "pessimistic":
        return above + tied
    if ties == "optimistic":
        return above
    return above + tied / 2


def recall_at_k(ranks: torch.Tensor | np.ndarray, k: int) -> float:
    r = torch.as_tensor(ranks, dtype=torch.float64)
    return float((r < k).to(torch.float64).mean()) if len(r) else float("nan")


def ndcg_at_k(ranks: torch.Tensor | np.ndarray, k: int) -> float:
    """One relevant item: ``1 / log2(rank + 2)`` if ``rank < k`` else 0, averaged."""
    r = torch.as_tensor(ranks, dtype=torch.float64)
    if not len(r):
        return float("nan")
    gain = torch.where(r < k, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r))
    return float(gain.mean())


def mrr(ranks: torch.Tensor | np.ndarray) -> float:
    r = torch.as_tensor(ranks, dtype=torch.float64)
    return float((1.0 / (r + 1.0)).mean()) if len(r) else float("nan")


def metric_table(ranks: torch.Tensor | np.ndarray, ks: Iterable[int] = (1, 10)) -> dict[str, float]:
    """``{"recall@k", "ndcg@k" for k in ks, "mrr", "n"}``."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    out["mrr"] = mrr(ranks)
    out["n"] = len(ranks)
    return out
