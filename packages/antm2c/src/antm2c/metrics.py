"""CTR metrics: AUC, logloss, GAUC; per-scene, scene-averaged and cold/warm strata.

AntM2C users report AUC (the only metric public users of the data confirm); logloss and GAUC
follow FuxiCTR (``metrics: [logloss, AUC, gAUC]`` grouped by ``user_id``). The release's positive
rate (~0.35) says negatives were down-sampled, so logloss and GAUC here are not comparable with
production traffic numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Predictions", "auc", "evaluate", "gauc", "logloss"]


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError("scores must be finite")
    return y, p


def _weights(w: np.ndarray | None, n: int) -> np.ndarray:
    """Sample weights (default 1): finite, non-negative, one per prediction."""
    if w is None:
        return np.ones(n)
    w = np.asarray(w, dtype=np.float64).ravel()
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have one entry per prediction ({n}), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and >= 0")
    return w


def _pair_auc(
    gid: np.ndarray, tid: np.ndarray, y: np.ndarray, w: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted Mann-Whitney AUC per group from rows sorted by (group, score).

    ``gid``/``tid``: group and tie-group (same group and score) ids, non-decreasing. Each
    positive counts the negative weight below its score plus half the tied negative weight,
    which is the trapezoidal ROC area scikit-learn computes. Returns (auc, positive weight,
    negative weight) per group (auc NaN where a class has no weight)."""
    n_t = int(tid[-1]) + 1 if len(tid) else 0
    pos_t = np.bincount(tid, weights=w * y, minlength=n_t)
    neg_t = np.bincount(tid, weights=w * (1 - y), minlength=n_t)
    t_group = np.zeros(n_t, np.int64)
    t_group[tid] = gid
    cum_neg = np.cumsum(neg_t) - neg_t  # negative weight in earlier tie groups (all groups)
    g_first = np.searchsorted(t_group, np.arange(n_groups))  # first tie group of each group
    below = cum_neg - cum_neg[g_first[t_group]]  # ... within this tie group's own group
    num = np.bincount(t_group, weights=pos_t * (below + 0.5 * neg_t), minlength=n_groups)
    wp = np.bincount(t_group, weights=pos_t, minlength=n_groups)
    wn = np.bincount(t_group, weights=neg_t, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where((wp > 0) & (wn > 0), num / (wp * wn), np.nan)
    return a, wp, wn


def auc(y_true: np.ndarray, y_score: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """ROC AUC, ties counted half (the Mann-Whitney statistic, = scikit-learn's
    ``roc_auc_score``), optionally with ``sample_weight``. NaN if a class has no weight."""
    y, p = _check(y_true, y_score)
    w = _weights(sample_weight, len(y))
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    tid = np.cumsum(np.concatenate([[True], ps[1:] != ps[:-1]])) - 1
    a, _, _ = _pair_auc(np.zeros(len(y), np.int64), tid, y[order], w[order], 1)
    return float(a[0])


def logloss(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    eps: float | str = "auto",
    sample_weight: np.ndarray | None = None,
) -> float:
    """(Weighted) mean binary cross-entropy of probabilities clipped to ``[eps, 1 - eps]``.

    ``eps="auto"`` is the machine epsilon of the input's floating dtype (float32 probabilities
    are clipped at 1.19e-7, float64 at 2.2e-16; other inputs count as float64), as
    scikit-learn's ``log_loss`` does; the clipping happens in that dtype."""
    raw = np.asarray(y_prob)
    dtype = raw.dtype if np.issubdtype(raw.dtype, np.floating) else np.dtype(np.float64)
    y, p = _check(y_true, y_prob)
    w = _weights(sample_weight, len(y))
    if len(y) == 0:
        return float("nan")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("logloss needs probabilities in [0, 1]")
    e = np.finfo(dtype).eps if eps == "auto" else float(eps)
    if not 0 <= e < 0.5:
        raise ValueError(f"eps must be 'auto' or in [0, 0.5), got {eps!r}")
    p = np.clip(raw.astype(dtype).ravel(), dtype.type(e), dtype.type(1 - e)).astype(np.float64)
    if w.sum() <= 0:
        return float("nan")
    return float(-(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum() / w.sum())


def gauc(
    y_true: np.ndarray,
    y_score: np.ndarray,
    groups: np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, float]:
    """Group AUC: per-group (user) AUC weighted by the group's impressions (its total sample
    weight when ``sample_weight`` is given; each group's AUC is then weighted too).

    Groups with one class only have no AUC and are skipped. Returns ``(gauc, skipped_fraction)``
    where the fraction is of impressions (weight) in skipped groups. Vectorised.
    """
    y, p = _check(y_true, y_score)
    g = np.asarray(groups).ravel()
    if g.shape != y.shape:
        raise ValueError("groups must have one entry per prediction")
    w = _weights(sample_weight, len(y))
    if len(y) == 0:
        return float("nan"), 0.0
    order = np.lexsort((p, g))  # by group, then score
    gs, ps = g[order], p[order]
    gstart = np.concatenate([[True], gs[1:] != gs[:-1]])
    gid = np.cumsum(gstart) - 1
    tstart = gstart | np.concatenate([[True], ps[1:] != ps[:-1]])
    tid = np.cumsum(tstart) - 1
    n_groups = int(gid[-1]) + 1
    a, wp, wn = _pair_auc(gid, tid, y[order], w[order], n_groups)
    ok = np.isfinite(a)
    total = wp + wn
    if not ok.any():
        return float("nan"), 1.0
    return float((a[ok] * total[ok]).sum() / total[ok].sum()), float(
        1.0 - total[ok].sum() / total.sum()
    )


@dataclass
class Predictions:
    """Scores of one evaluation pass with the keys needed to stratify them."""

    label: np.ndarray
    prob: np.ndarray
    scene: np.ndarray
    user: np.ndarray
    item: np.ndarray
    cold_user: np.ndarray
    cold_item: np.ndarray
    row: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, mask: np.ndarray) -> Predictions:
        return Predictions(
            **{k: (None if v is None else v[mask]) for k, v in self.__dict__.items()}
        )


def _block(y: np.ndarray, p: np.ndarray, users: np.ndarray | None = None) -> dict[str, float]:
    d = {
        "n": len(y),
        "pos_rate": float(y.mean()) if len(y) else float("nan"),
        "auc": auc(y, p) if len(y) else float("nan"),
        "logloss": logloss(y, p) if len(y) else float("nan"),
    }
    if users is not None:
        d["gauc"], d["gauc_skipped"] = gauc(y, p, users)
    return d


def evaluate(pred: Predictions, scenes: Mapping[int, str] | None = None) -> dict[str, object]:
    """Overall, per-scene (and their unweighted mean), cold/warm user and item metrics."""
    out: dict[str, object] = {"overall": _block(pred.label, pred.prob, pred.user)}
    per = {}
    for s in np.unique(pred.scene):
        m = pred.scene == s
        name = scenes[int(s)] if scenes else str(int(s))
        per[name] = _block(pred.label[m], pred.prob[m])
    out["scene"] = per
    aucs = [v["auc"] for v in per.values() if np.isfinite(v["auc"])]
    out["scene_avg_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    for who, flag in (("user", pred.cold_user), ("item", pred.cold_item)):
        out[f"cold_{who}"] = _block(pred.label[flag], pred.prob[flag])
        out[f"warm_{who}"] = _block(pred.label[~flag], pred.prob[~flag])
    return out
