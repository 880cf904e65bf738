"""In-rationale progressive distillation schedule (Sec. 3.4, Eqs. 9-13, Prop. 3.1, Alg. 1).

* Eq. 9: ``h_i(S(t)) = sum_{j > c_i(t)} d_ij``: the difficulty question i still has to *output*
  at stage t when its first ``c_i(t)`` steps are given in the input.
* Eq. 10: the global budget ``D(t) = u t^(p+1) / (p+1) + C_0`` with ``D(T) = B = sum_ij d_ij``,
  so ``u = (B - C_0)(p + 1) / T^(p+1)`` (:class:`DifficultyBudget`).
* Eq. 11: ``c_i(t) = c_i(t-1) - q_i(t) Delta_s`` with ``q_i = [i in S(t)]``, subject to
  ``DeltaH(S) <= DeltaD(t) = D(t) - H(t-1)``.
* Eq. 12: ``F(S) = -(DeltaD - DeltaH(S)) + beta sum_k sqrt(|C_k cap S|)`` over question clusters.
* Eq. 13 / Prop. 3.1: ``max F(S)`` s.t. ``DeltaH(S) <= DeltaD``; F is monotone submodular. The
  selectors maximise the shifted ``F'(S) = DeltaH(S) + beta sum_k sqrt(|C_k cap S|)`` (= F + DeltaD,
  same argmax, non-negative): ``"greedy"`` (cost-density greedy, also started from each of the
  ``seeds`` largest single questions, + best singleton),
  ``"threshold"`` (decreasing-threshold density greedy with ``eps``, the FTGP family of
  Li et al. 2022 that the paper uses; + best singleton) and ``"brute"`` (exact, for tests).

Choices the paper leaves open (Sec. A5.4-5 of our notes): ``Delta_s = 1``; ``c_i(0) = n_i - 1``
(only the last step is output) and, if that leaves the output difficulty below ``C_0``, the
selector runs once at stage 0 to reach ``C_0``; epoch ``e <= T`` trains with ``c(e)``, later
epochs with ``c = 0``. When ``max_i(n_i - 1) > T Delta_s`` the schedule cannot reach ``B`` by
stage T: :attr:`Schedule.feasible` is False and a warning is logged.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SELECTORS",
    "DifficultyBudget",
    "Schedule",
    "ScheduleConfig",
    "build_schedule",
    "select",
    "shifted_value",
    "value",
]

log = logging.getLogger(__name__)
SELECTORS = ("greedy", "threshold", "brute")


@dataclass(frozen=True)
class DifficultyBudget:
    """Eq. 10: ``D(t) = u t^(p+1)/(p+1) + C_0``, ``D(T) = B``."""

    B: float
    C0: float
    T: int
    p: float = 0.5

    def __post_init__(self) -> None:
        if self.T < 1:
            raise ValueError(f"T (stages) must be >= 1, got {self.T}")
        if self.p <= -1:
            raise ValueError("p must be > -1")
        if not 0 <= self.C0 <= self.B:
            raise ValueError(f"need 0 <= C0 <= B, got C0={self.C0}, B={self.B}")

    @property
    def u(self) -> float:
        return (self.B - self.C0) * (self.p + 1) / self.T ** (self.p + 1)

    def __call__(self, t: float) -> float:
        if t < 0:
            raise ValueError("stage t must be >= 0")
        t = min(t, self.T)
        return self.u * t ** (self.p + 1) / (self.p + 1) + self.C0


def _cluster_term(S: Any, clusters: np.ndarray) -> float:
    idx = np.fromiter(S, dtype=np.int64) if not isinstance(S, np.ndarray) else S
    if idx.size == 0:
        return 0.0
    _, counts = np.unique(clusters[idx], return_counts=True)
    return float(np.sqrt(counts).sum())


def shifted_value(S: Any, costs: np.ndarray, clusters: np.ndarray, beta: float) -> float:
    """``F'(S) = DeltaH(S) + beta sum_k sqrt(|C_k cap S|)`` (monotone submodular)."""
    idx = np.fromiter(S, dtype=np.int64)
    return float(costs[idx].sum()) + beta * _cluster_term(idx, clusters)


def value(S: Any, costs: np.ndarray, clusters: np.ndarray, beta: float, delta_D: float) -> float:
    """Eq. 12: ``F(S) = -(DeltaD - DeltaH(S)) + beta sum_k sqrt(|C_k cap S|)``."""
    return shifted_value(S, costs, clusters, beta) - delta_D


def _gain(
    i: int, counts: dict[int, int], costs: np.ndarray, clusters: np.ndarray, beta: float
) -> float:
    n = counts.get(int(clusters[i]), 0)
    return float(costs[i]) + beta * (math.sqrt(n + 1) - math.sqrt(n))


def _best_singleton(cand, costs, clusters, beta, budget) -> list[int]:
    fit = [i for i in cand if costs[i] <= budget]
    if not fit:
        return []
    return [max(fit, key=lambda i: (_gain(i, {}, costs, clusters, beta), -i))]


def _greedy_from(
    seed: list[int], cand: np.ndarray, costs: np.ndarray, cl: np.ndarray, beta: float, budget: float
) -> list[int]:
    """Cost-density greedy started from ``seed`` (vectorised): repeatedly add the candidate that
    fits with the best marginal gain per unit cost (ties: larger cost, then lower index)."""
    chosen = list(seed)
    left = budget - float(costs[chosen].sum()) if chosen else budget
    k = int(cl.max()) + 1 if cl.size else 1
    counts = np.bincount(cl[chosen], minlength=k).astype(np.float64) if chosen else np.zeros(k)
    rem = np.setdiff1d(cand, np.asarray(chosen, dtype=np.int64))
    while rem.size:
        rem = rem[costs[rem] <= left + 1e-12]
        if not rem.size:
            break
        n = counts[cl[rem]]
        gain = costs[rem] + beta * (np.sqrt(n + 1) - np.sqrt(n))
        c = costs[rem]
        dens = np.where(c > 0, gain / np.where(c > 0, c, 1.0), np.inf)
        order = np.lexsort((rem, -c, -dens))  # last key is primary
        i = int(rem[order[0]])
        chosen.append(i)
        counts[cl[i]] += 1
        left -= float(costs[i])
        rem = np.delete(rem, order[0])
    return chosen


def _threshold_greedy(cand, costs, clusters, beta, budget, eps: float) -> list[int]:
    """Decreasing-threshold density greedy (the FTGP family of Li et al. 2022)."""
    chosen: list[int] = []
    counts: dict[int, int] = {}
    left = budget
    remaining = set(cand)

    def density(i: int) -> float:
        g = _gain(i, counts, costs, clusters, beta)
        return math.inf if costs[i] <= 0 else g / costs[i]

    fit0 = [i for i in remaining if costs[i] <= left]
    if not fit0:
        return []
    finite = [density(i) for i in fit0 if costs[i] > 0]
    top = max(finite) if finite else 1.0
    for i in sorted(i for i in fit0 if costs[i] <= 0):
        chosen.append(i)
        remaining.discard(i)
        counts[int(clusters[i])] = counts.get(int(clusters[i]), 0) + 1
    tau = top
    floor = eps * top / max(1, len(cand))
    while tau >= floor and remaining:
        for i in sorted(remaining):
            if costs[i] <= left and density(i) >= tau:
                chosen.append(i)
                counts[int(clusters[i])] = counts.get(int(clusters[i]), 0) + 1
                left -= costs[i]
        remaining -= set(chosen)
        tau *= 1 - eps
    return chosen


def select(
    costs: np.ndarray,
    clusters: np.ndarray,
    budget: float,
    *,
    beta: float = 12.0,
    candidates: Any = None,
    method: str = "greedy",
    eps: float = 0.1,
    seeds: int = 16,
) -> list[int]:
    """Eq. 13: a set S of candidate indices with ``sum costs[S] <= budget`` maximising F'.

    ``costs[i] >= 0`` is the increase of ``h_i`` if question i is selected (its DeltaH share).
    ``candidates`` defaults to all indices. ``seeds``: how many greedy runs the ``"greedy"``
    selector starts from a single question (the largest-cost ones; 0 = plain greedy + best
    singleton). Returns sorted indices.
    """
    costs = np.asarray(costs, dtype=np.float64)
    clusters = np.asarray(clusters)
    if costs.shape != clusters.shape or costs.ndim != 1:
        raise ValueError("costs and clusters must be 1-D arrays of the same length")
    if (costs < 0).any() or not np.isfinite(costs).all():
        raise ValueError("costs must be finite and >= 0")
    if beta < 0:
        raise ValueError("beta must be >= 0")
    if method not in SELECTORS:
        raise ValueError(f"method must be one of {SELECTORS}, got {method!r}")
    if seeds < 0:
        raise ValueError("seeds must be >= 0")
    cand = list(range(len(costs))) if candidates is None else sorted(int(i) for i in candidates)
    if budget < 0 or not cand:
        return []
    if method == "brute":
        if len(cand) > 22:
            raise ValueError("brute force is limited to 22 candidates")
        best, best_v = [], -1.0
        for r in range(len(cand) + 1):
            for S in itertools.combinations(cand, r):
                if costs[list(S)].sum() <= budget + 1e-12:
                    v = shifted_value(S, costs, clusters, beta)
                    if v > best_v + 1e-12:
                        best, best_v = list(S), v
        return sorted(best)
    if method == "threshold":
        g = _threshold_greedy(cand, costs, clusters, beta, budget, eps)
        s = _best_singleton(cand, costs, clusters, beta, budget)
        best = max((g, s), key=lambda x: shifted_value(x, costs, clusters, beta))
        return sorted(best)
    # density greedy + partial enumeration: the plain run and one run started from each of the
    # `seeds` most valuable single questions (Sviridenko-style enumeration of size 1; keeps the
    # best-singleton 1/2 guarantee, and repairs greedy's subset-sum failures when beta = 0)
    ca = np.asarray(cand, dtype=np.int64)
    cl = np.unique(clusters, return_inverse=True)[1].reshape(clusters.shape)
    fit = ca[costs[ca] <= budget + 1e-12]
    if not fit.size:
        return []
    runs = [_greedy_from([], ca, costs, cl, beta, budget)]
    top = fit[np.lexsort((fit, -costs[fit]))][:seeds] if seeds else fit[:0]
    runs += [_greedy_from([int(i)], ca, costs, cl, beta, budget) for i in top]
    runs.append(_best_singleton(fit.tolist(), costs, clusters, beta, budget))
    best = max(runs, key=lambda x: shifted_value(x, costs, clusters, beta))
    return sorted(best)


@dataclass(frozen=True)
class ScheduleConfig:
    """Eq. 10-13 settings (App. A defaults: p = 0.5, C_0 = 0.3 B, beta = 12, K = 5)."""

    stages: int = 5  # T (the paper: half of the epochs)
    p: float = 0.5
    c0_fraction: float = 0.3
    beta: float = 12.0
    delta_s: int = 1
    selector: str = "greedy"
    eps: float = 0.1
    seeds: int = 16  # greedy runs started from one question each (partial enumeration)

    def __post_init__(self) -> None:
        if self.stages < 1 or self.delta_s < 1:
            raise ValueError("stages and delta_s must be >= 1")
        if not 0 <= self.c0_fraction <= 1:
            raise ValueError("c0_fraction must be in [0, 1]")
        if self.beta < 0 or self.p <= -1 or not 0 < self.eps < 1:
            raise ValueError("beta >= 0, p > -1, 0 < eps < 1")
        if self.selector not in SELECTORS:
            raise ValueError(f"selector must be one of {SELECTORS}")
        if self.seeds < 0:
            raise ValueError("seeds must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Schedule:
    """``c[t, i]``: input steps of question i at stage t = 0..T; stats per stage."""

    c: np.ndarray  # (T + 1, n) int
    n_steps: np.ndarray  # (n,)
    budget: DifficultyBudget
    stats: list[dict[str, Any]] = field(default_factory=list)
    feasible: bool = True

    @property
    def T(self) -> int:
        return self.c.shape[0] - 1

    def input_steps(self, epoch: int) -> np.ndarray:
        """Input steps per question in 1-based ``epoch`` (Alg. 1: ``c(e)`` for e <= T, else 0)."""
        if epoch < 1:
            raise ValueError("epochs are 1-based")
        if epoch > self.T:
            return np.zeros_like(self.n_steps)
        return self.c[epoch].copy()


def _h(d: list[np.ndarray], c: np.ndarray) -> float:
    return float(sum(di[ci:].sum() for di, ci in zip(d, c, strict=True)))


def _costs(d: list[np.ndarray], c: np.ndarray, ds: int) -> np.ndarray:
    return np.array([di[max(0, ci - ds) : ci].sum() for di, ci in zip(d, c, strict=True)])


def build_schedule(
    difficulties: list[np.ndarray], clusters: Any, cfg: ScheduleConfig | None = None
) -> Schedule:
    """Alg. 1 step 4: the whole static schedule, stage by stage."""
    cfg = cfg or ScheduleConfig()
    d = [np.clip(np.asarray(x, dtype=np.float64), 0, None) for x in difficulties]
    clusters = np.asarray(clusters)
    n = len(d)
    if n == 0:
        raise ValueError("no questions to schedule")
    if clusters.shape != (n,):
        raise ValueError(
            f"{clusters.shape[0] if clusters.ndim else 0} cluster ids for {n} questions"
        )
    if any(len(x) == 0 for x in d):
        raise ValueError("every question needs at least one step")
    n_steps = np.array([len(x) for x in d])
    B = float(sum(x.sum() for x in d))
    budget = DifficultyBudget(B=B, C0=cfg.c0_fraction * B, T=cfg.stages, p=cfg.p)
    c = n_steps - 1
    feasible = int(c.max()) <= cfg.stages * cfg.delta_s
    if not feasible:
        log.warning(
            "schedule cannot reach the full rationale by stage T=%d with delta_s=%d "
            "(a question has %d input steps at stage 0); raise stages or delta_s",
            cfg.stages, cfg.delta_s, int(c.max()),
        )  # fmt: skip
    rows = [c.copy()]
    stats = []

    def step(target: float, t: int) -> None:
        nonlocal c
        H = _h(d, c)
        dD = target - H
        cand = np.nonzero(c > 0)[0]
        costs = _costs(d, c, cfg.delta_s)
        S = (
            select(
                costs,
                clusters,
                dD,
                beta=cfg.beta,
                candidates=cand,
                method=cfg.selector,
                eps=cfg.eps,
                seeds=cfg.seeds,
            )
            if dD > 0
            else []
        )
        c = c.copy()
        c[S] = np.maximum(0, c[S] - cfg.delta_s)
        stats.append(
            {
                "stage": t,
                "D": target,
                "delta_D": dD,
                "delta_H": float(costs[S].sum()) if len(S) else 0.0,
                "H": _h(d, c),
                "selected": len(S),
                "clusters": {
                    int(k): int(v)
                    for k, v in zip(*np.unique(clusters[S], return_counts=True), strict=True)
                }
                if len(S)
                else {},
            }
        )

    if _h(d, c) < budget.C0:
        step(budget.C0, 0)
        rows[0] = c.copy()
    else:
        stats.append(
            {
                "stage": 0,
                "D": budget.C0,
                "delta_D": 0.0,
                "delta_H": 0.0,
                "H": _h(d, c),
                "selected": 0,
                "clusters": {},
            }
        )
    for t in range(1, cfg.stages + 1):
        step(budget(t), t)
        rows.append(c.copy())
    return Schedule(
        c=np.stack(rows), n_steps=n_steps, budget=budget, stats=stats, feasible=feasible
    )
