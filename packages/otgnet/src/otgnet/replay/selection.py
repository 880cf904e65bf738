"""Triad importance and greedy importance-plus-diversity selection (paper Sec. 4.2).

**Importance** of a node is its influence on the task's training loss. The official code runs
LiSSA with ``scale = 1e9`` and ``damping = 0``, which makes the inverse-Hessian term negligible: its
ranking is effectively a gradient dot product ``-<grad l_v, grad L>`` (dossier B4). Here that dot
product is computed in closed form for the classifier's output layer (``grad_W l = (p - y) h^T``,
``grad_b l = p - y``), for all nodes at once. Sign (a choice, see README): ``"aligned"`` scores
``+<grad l_v, grad L>`` (removing the node would raise the total loss the most); ``"official"``
keeps the official sign. Scores are min-max normalised to ``[0, 1]``.

**Selection** greedily maximises the monotone submodular objective

    f(S) = sum_{k in S} importance(k) + gamma * |covered(S)| / n,

``covered(S)`` = candidates within ``radius`` of a selected triad's embedding, so greedy gets the
``(1 - 1/e)`` guarantee. ``radius`` defaults to the 20th percentile of pairwise distances.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["coverage_objective", "greedy_select", "head_gradient_scores", "node_importance"]


def head_gradient_scores(
    hidden: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """``<g_i, mean_j g_j>`` for the per-sample gradients ``g_i`` of cross-entropy w.r.t. a linear
    output layer (weight and bias), given its input ``hidden`` (M, h), softmax ``probs`` (M, C) and
    integer ``labels`` (M,). Exact, vectorised: ``g_i = ((p_i - y_i) h_i^T, p_i - y_i)``."""
    r = probs - torch.nn.functional.one_hot(labels, probs.shape[1]).to(probs.dtype)
    gw = r.T @ hidden / len(r)  # mean weight gradient (C, h)
    gb = r.mean(0)
    return ((r @ gw) * hidden).sum(1) + r @ gb


def node_importance(
    nodes: np.ndarray, scores: np.ndarray, num_nodes: int, sign: str = "aligned"
) -> np.ndarray:
    """Per-node importance in [0, 1] from per-sample ``scores`` at ``nodes`` (first occurrence of
    each node counts, as in the official code). Nodes without a sample get 0."""
    if sign not in ("aligned", "official"):
        raise ValueError(f"sign must be 'aligned' or 'official', got {sign!r}")
    nodes = np.asarray(nodes, np.int64)
    scores = np.asarray(scores, np.float64) * (1.0 if sign == "aligned" else -1.0)
    uniq, first = np.unique(nodes, return_index=True)
    out = np.zeros(num_nodes)
    if len(uniq) == 0:
        return out
    v = scores[first]
    span = v.max() - v.min()
    out[uniq] = (v - v.min()) / span if span > 0 else 1.0
    return out


def _within(emb: np.ndarray, radius: float | None) -> tuple[np.ndarray, float]:
    e = torch.as_tensor(emb, dtype=torch.float64)
    d = torch.cdist(e, e).numpy()
    if radius is None:
        n = len(d)
        off = d[~np.eye(n, dtype=bool)]
        radius = float(np.quantile(off, 0.2)) if off.size else 0.0
    return d <= radius, radius


def coverage_objective(
    selected, importance: np.ndarray, emb: np.ndarray, gamma: float, radius: float
) -> float:
    """``f(S)`` of the module docstring (for tests and diagnostics)."""
    within, _ = _within(emb, radius)
    s = np.asarray(list(selected), np.int64)
    if s.size == 0:
        return 0.0
    covered = within[s].any(0)
    return float(importance[s].sum() + gamma * covered.sum() / len(importance))


def greedy_select(
    importance: np.ndarray,
    emb: np.ndarray,
    k: int,
    gamma: float = 20.0,
    radius: float | None = None,
    top: int | None = 1000,
) -> np.ndarray:
    """Indices of ``k`` candidates chosen greedily for ``f(S)`` among the ``top`` most important.

    ``gamma = 0`` reduces to the ``k`` most important.
    """
    importance = np.asarray(importance, np.float64)
    emb = np.asarray(emb, np.float64)
    if emb.ndim != 2 or len(emb) != len(importance):
        raise ValueError("emb must be (n, d) with one row per candidate")
    if k < 0 or gamma < 0:
        raise ValueError("k and gamma must be >= 0")
    n = len(importance)
    if n == 0 or k == 0:
        return np.zeros(0, np.int64)
    cand = np.argsort(-importance, kind="stable")
    if top is not None:
        cand = cand[:top]
    imp, e = importance[cand], emb[cand]
    within, _ = _within(e, radius)
    m = len(cand)
    covered = np.zeros(m, bool)
    chosen: list[int] = []
    avail = np.ones(m, bool)
    for _ in range(min(k, m)):
        gain = imp + gamma * (within & ~covered[None, :]).sum(1) / m
        gain[~avail] = -np.inf
        j = int(np.argmax(gain))
        chosen.append(j)
        avail[j] = False
        covered |= within[j]
    return cand[np.asarray(chosen, np.int64)]
