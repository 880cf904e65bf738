from __future__ import annotations

import itertools

import numpy as np
import pytest
from kpod import DifficultyBudget, ScheduleConfig, build_schedule, select, shifted_value, value
from kpod.bench import schedule_ratio


def test_budget_closed_form():
    b = DifficultyBudget(B=100.0, C0=30.0, T=10, p=0.5)
    assert b(0) == pytest.approx(30.0)
    assert b(10) == pytest.approx(100.0)
    assert b.u == pytest.approx(70 * 1.5 / 10**1.5)
    ts = np.linspace(0, 10, 41)
    d = np.array([b(t) for t in ts])
    assert (np.diff(d) > 0).all()  # monotone
    assert (np.diff(d, 2) > -1e-9).all()  # convex for p > 0: small increments early
    assert b(12) == pytest.approx(100.0)  # held at B after T
    # dD/dt = u t^p
    t, h = 4.0, 1e-5
    assert (b(t + h) - b(t - h)) / (2 * h) == pytest.approx(b.u * t**0.5, rel=1e-4)
    for bad in [dict(B=1, C0=2, T=3), dict(B=1, C0=0, T=0), dict(B=1, C0=0, T=2, p=-1)]:
        with pytest.raises(ValueError):
            DifficultyBudget(**bad)


def _rand(rng, n):
    return rng.gamma(2.0, 1.0, n), rng.integers(0, 3, n), float(rng.choice([0.5, 3.0, 12.0]))


def test_value_is_monotone_submodular_property():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = 9
        costs, cl, beta = _rand(rng, n)
        B = set(rng.choice(n, size=rng.integers(0, n), replace=False).tolist())
        A = {i for i in B if rng.random() < 0.5}
        x = int(rng.integers(n))
        if x in B:
            continue
        fa, fb = shifted_value(A, costs, cl, beta), shifted_value(B, costs, cl, beta)
        gain_a = shifted_value(A | {x}, costs, cl, beta) - fa
        gain_b = shifted_value(B | {x}, costs, cl, beta) - fb
        assert gain_a >= gain_b - 1e-9  # diminishing returns
        assert fb >= fa - 1e-12  # monotone
        assert value(A, costs, cl, beta, 5.0) == pytest.approx(fa - 5.0)


def test_selection_respects_budget_and_candidates():
    rng = np.random.default_rng(1)
    for method in ("greedy", "threshold", "brute"):
        for _ in range(30):
            costs, cl, beta = _rand(rng, 10)
            budget = float(costs.sum() * rng.uniform(0.1, 0.7))
            cand = sorted(rng.choice(10, size=7, replace=False).tolist())
            S = select(costs, cl, budget, beta=beta, candidates=cand, method=method)
            assert costs[S].sum() <= budget + 1e-9
            assert set(S) <= set(cand)


def test_greedy_close_to_bruteforce():
    ratios = schedule_ratio(30, n=10, seed=5)
    assert min(ratios) >= 0.5  # FTGP-style guarantee (1/2 - eps)
    assert np.mean(ratios) >= 0.9
    ratios_t = schedule_ratio(30, n=10, seed=5, method="threshold")
    assert min(ratios_t) >= 0.5 - 0.1


def test_beta_zero_every_budget_filling_set_is_optimal():
    costs = np.array([1.0, 2.0, 3.0, 4.0])
    cl = np.zeros(4, int)
    # with beta = 0, F'(S) = DeltaH(S): any set filling the budget exactly is optimal
    S = select(costs, cl, 5.0, beta=0.0, method="brute")
    assert costs[S].sum() == pytest.approx(5.0)
    # with beta = 0 the problem is subset-sum: greedy keeps the (1/2) guarantee, not optimality
    assert shifted_value(select(costs, cl, 5.0, beta=0.0), costs, cl, 0.0) >= 2.5
    # {0, 3} and {1, 2} both fill it: both optimal
    assert shifted_value([0, 3], costs, cl, 0.0) == shifted_value([1, 2], costs, cl, 0.0) == 5.0


def test_diversity_prefers_underrepresented_clusters():
    costs = np.ones(8)
    cl = np.array([0, 0, 0, 0, 0, 0, 1, 2])
    S = select(costs, cl, 3.0, beta=12.0, method="greedy")
    assert sorted(cl[S].tolist()) == [0, 1, 2]
    S0 = select(costs, cl, 3.0, beta=0.0, method="greedy")
    assert len(S0) == 3  # budget filled either way


def test_select_rejects_bad_input():
    with pytest.raises(ValueError, match="costs"):
        select(np.array([-1.0]), np.array([0]), 1.0)
    with pytest.raises(ValueError, match="same length"):
        select(np.ones(2), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="method"):
        select(np.ones(2), np.zeros(2), 1.0, method="random")
    assert select(np.ones(2), np.zeros(2), -1.0) == []


def test_schedule_invariants():
    rng = np.random.default_rng(2)
    n = 40
    d = [rng.gamma(2.0, 1.0, rng.integers(1, 6)) for _ in range(n)]
    cl = rng.integers(0, 5, n)
    cfg = ScheduleConfig(stages=5, beta=2.0)
    s = build_schedule(d, cl, cfg)
    assert s.c.shape == (6, n)
    assert (s.c >= 0).all()
    assert (np.diff(s.c, axis=0) <= 0).all()  # c_i(t) never grows
    assert (np.diff(s.c, axis=0) >= -cfg.delta_s).all()  # at most delta_s per stage (Eq. 11)
    assert (s.c[0] <= s.n_steps - 1).all()
    for row in s.stats[1:]:
        assert row["delta_H"] <= max(row["delta_D"], 0.0) + 1e-9  # Eq. 13 constraint
    assert (s.input_steps(cfg.stages + 1) == 0).all()  # full rationale after T
    assert (s.input_steps(1) == s.c[1]).all()
    H = [sum(di[ci:].sum() for di, ci in zip(d, s.c[t], strict=True)) for t in range(6)]
    # the output difficulty never overshoots the budget (unless the start already exceeds it)
    assert all(H[t] <= max(s.budget(t), H[t - 1]) + 1e-9 for t in range(1, 6))
    assert any(row["selected"] for row in s.stats)
    assert (np.diff(H) >= -1e-9).all()
    with pytest.raises(ValueError):
        s.input_steps(0)


def test_schedule_infeasible_is_flagged(caplog):
    d = [np.ones(8), np.ones(2)]
    s = build_schedule(d, [0, 1], ScheduleConfig(stages=3))
    assert not s.feasible
    assert "cannot reach" in caplog.text
    assert build_schedule(d, [0, 1], ScheduleConfig(stages=3, delta_s=3)).feasible


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="at least one step"):
        build_schedule([np.ones(2), np.array([])], [0, 1])
    with pytest.raises(ValueError, match="cluster ids"):
        build_schedule([np.ones(2)], [0, 1])
    with pytest.raises(ValueError):
        ScheduleConfig(selector="fastest")


def test_brute_force_is_exact_on_tiny_instance():
    costs = np.array([2.0, 2.0, 3.0])
    cl = np.array([0, 1, 0])
    best = max(
        (
            S
            for r in range(4)
            for S in itertools.combinations(range(3), r)
            if costs[list(S)].sum() <= 4
        ),
        key=lambda S: shifted_value(S, costs, cl, 1.0),
    )
    assert select(costs, cl, 4.0, beta=1.0, method="brute") == sorted(best)


def test_spearman_gap_interval_brackets_clear_and_null_gaps():
    import pandas as pd
    from kpod.bench import spearman_gap_interval

    rng = np.random.default_rng(0)
    n = 300
    hard = rng.integers(1, 5, size=2 * n).astype(float)
    noise = rng.normal(size=2 * n)
    df = pd.DataFrame({"id": np.repeat(np.arange(n), 2), "hardness": hard,
                       "difficulty": hard + 0.5 * noise, "difficulty_uniform": noise})  # fmt: skip
    lo, hi = spearman_gap_interval(df, n_boot=200)
    assert 0 < lo < hi  # weighted tracks hardness, uniform does not
    df["difficulty"] = df["difficulty_uniform"]
    lo, hi = spearman_gap_interval(df, n_boot=50)
    assert lo == hi == 0.0  # identical scores: no gap in any resample
