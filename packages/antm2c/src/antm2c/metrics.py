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


def _rank_avg(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank (what the Mann-Whitney U statistic needs)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.concatenate([[True], xs[1:] != xs[:-1]])
    grp = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    last = np.concatenate([first[1:], [len(xs)]]) - 1
    avg = (first + last) / 2.0 + 1.0
    ranks = np.empty(len(x))
    ranks[order] = avg[grp]
    return ranks


def auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged. NaN if one class only."""
    y, p = _check(y_true, y_score)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _rank_avg(p)
    return float((r[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(y_true: np.ndarray, y_prob: np.ndarray, eps: float | None = None) -> float:
    """Mean binary cross-entropy of probabilities, clipped to ``[eps, 1 - eps]``
    (``eps`` defaults to float64 machine epsilon, as scikit-learn does)."""
    y, p = _check(y_true, y_prob)
    if len(y) == 0:
        return float("nan")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("logloss needs probabilities in [0, 1]")
    e = np.finfo(np.float64).eps if eps is None else eps
    p = np.clip(p, e, 1 - e)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def gauc(y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Group AUC: per-group (user) AUC weighted by the group's impressions.

    Groups with only one class have no AUC and are skipped. Returns ``(gauc, skipped_fraction)``
    where the fraction is of impressions in skipped groups. Vectorised (no per-group loop).
    """
    y, p = _check(y_true, y_score)
    g = np.asarray(groups).ravel()
    if g.shape != y.shape:
        raise ValueError("groups must have one entry per prediction")
    if len(y) == 0:
        return float("nan"), 0.0
    # order by (group, score) so ranks within each group come from one global ordering
    order = np.lexsort((p, g))
    gs, ps, ys = g[order], p[order], y[order]
    gstart = np.concatenate([[True], gs[1:] != gs[:-1]])
    gid = np.cumsum(gstart) - 1
    # tie groups: same group and same score
    tstart = gstart | np.concatenate([[True], ps[1:] != ps[:-1]])
    tid = np.cumsum(tstart) - 1
    pos_in_group = np.arange(len(ys)) - np.flatnonzero(gstart)[gid]
    t_first = np.flatnonzero(tstart)
    t_last = np.concatenate([t_first[1:], [len(ys)]]) - 1
    t_avg = (pos_in_group[t_first] + (t_last - t_first) / 2.0) + 1.0
    ranks = t_avg[tid]
    n = np.bincount(gid).astype(np.float64)
    npos = np.bincount(gid, weights=ys)
    nneg = n - npos
    rsum = np.bincount(gid, weights=ranks * ys)
    ok = (npos > 0) & (nneg > 0)
    if not ok.any():
        return float("nan"), 1.0
    a = (rsum[ok] - npos[ok] * (npos[ok] + 1) / 2) / (npos[ok] * nneg[ok])
    w = n[ok]
    return float((a * w).sum() / w.sum()), float(1.0 - w.sum() / n.sum())


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
