"""Ranking metrics for click prediction: ROC AUC (with ties) and log loss."""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "logloss"]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney statistic with average ranks for ties.

    Raises ``ValueError`` when only one class is present (AUC is undefined).
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    # average (1-based) ranks over runs of equal scores
    bounds = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1], True])
    a, b = bounds[:-1], bounds[1:]
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.repeat((a + b - 1) / 2.0 + 1.0, b - a)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
