"""CTR metrics: AUC (ties by rank averaging), logloss (clipped) and GAUC (per-user AUC weighted by
impressions, single-class users skipped and counted)."""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "gauc", "logloss"]


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), np.float64)
    # average ranks over ties
    edges = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(x)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie block
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN when only one class is present."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    r = _ranks(s)
    return float((r[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """(GAUC, fraction of impressions skipped because their user had one class)."""
    y, s, g = np.asarray(labels), np.asarray(scores), np.asarray(groups)
    total, weight, skipped = 0.0, 0, 0
    order = np.argsort(g, kind="mergesort")
    gs = g[order]
    bounds = np.flatnonzero(np.diff(gs)) + 1
    for idx in np.split(order, bounds):
        a = auc(y[idx], s[idx])
        if np.isnan(a):
            skipped += len(idx)
            continue
        total += a * len(idx)
        weight += len(idx)
    return (total / weight if weight else float("nan")), skipped / max(1, len(y))
