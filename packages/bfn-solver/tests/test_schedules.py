import itertools
import math

import pytest
import torch
from bfn_solver import (
    ContinuousSchedule,
    DiscreteSchedule,
    bfn_to_diffusion_time,
    diffusion_to_bfn_time,
    time_grid,
)


def test_continuous_identities():
    s = ContinuousSchedule(1e-3)
    assert s.gamma(0.0) == 0.0
    assert s.gamma(1.0) == pytest.approx(1 - 1e-6, abs=1e-15)
    assert s.one_minus_gamma(1.0) == pytest.approx(1e-6, rel=1e-12)
    for t in (0.01, 0.3, 0.9):
        b = s.accuracy(t)
        assert s.gamma(t) == pytest.approx(b / (1 + b), rel=1e-12)
        assert s.lam(t) == pytest.approx(0.5 * math.log(s.gamma(t) / (1 - s.gamma(t))), rel=1e-10)
        assert s.t_of_lam(s.lam(t)) == pytest.approx(t, rel=1e-12)
        assert s.sigma(t) ** 2 == pytest.approx(s.gamma(t) * (1 - s.gamma(t)), rel=1e-12)
    lams = [s.lam(t) for t in torch.linspace(0.001, 1, 50).tolist()]
    assert all(b > a for a, b in itertools.pairwise(lams))
    assert s.lam(0.0) == -math.inf


def test_vectorised_matches_scalar():
    s = ContinuousSchedule(1e-2)
    t = torch.tensor([0.05, 0.5, 1.0], dtype=torch.float64)
    for fn in ("gamma", "sigma", "lam", "accuracy"):
        ref = torch.tensor([getattr(s, fn)(v) for v in t.tolist()], dtype=torch.float64)
        torch.testing.assert_close(s.tensor(fn, t), ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", [1, 7, 100])
def test_graves_accuracies_telescope(n):
    s = ContinuousSchedule(1e-3)
    assert sum(s.step_accuracy(i, n) for i in range(1, n + 1)) == pytest.approx(1e6 - 1, rel=1e-10)
    d = DiscreteSchedule(27, 0.5625)
    assert sum(d.step_accuracy(i, n) for i in range(1, n + 1)) == pytest.approx(0.5625, rel=1e-12)


def test_continuous_sde_matches_moment_odes():
    """dm/ds = f m and dv/ds = 2 f v + g^2 for m = gamma x, v = gamma (1 - gamma)."""
    sc = ContinuousSchedule(1e-3)
    h = 1e-6
    for s in (0.1, 0.5, 0.9):
        m = lambda s_: sc.gamma(1 - s_)  # noqa: E731
        v = lambda s_: sc.sigma(1 - s_) ** 2  # noqa: E731
        dm = (m(s + h) - m(s - h)) / (2 * h)
        dv = (v(s + h) - v(s - h)) / (2 * h)
        assert dm == pytest.approx(sc.f(s) * m(s), rel=1e-6)
        assert dv == pytest.approx(2 * sc.f(s) * v(s) + sc.g2(s), rel=1e-5, abs=1e-9)


def test_discrete_sde_matches_moment_odes():
    """Mean beta (K e - 1) and variance beta K of the logits follow the linear SDE (f, g^2)."""
    sc = DiscreteSchedule(5, 2.0)
    h = 1e-6
    for s in (0.1, 0.5, 0.8):
        m = lambda s_: sc.beta(1 - s_)  # noqa: E731  (per unit of K e - 1)
        v = lambda s_: sc.num_classes * sc.beta(1 - s_)  # noqa: E731
        dm = (m(s + h) - m(s - h)) / (2 * h)
        dv = (v(s + h) - v(s - h)) / (2 * h)
        assert dm == pytest.approx(sc.f(s) * m(s), rel=1e-6)
        assert dv == pytest.approx(2 * sc.f(s) * v(s) + sc.g2(s), rel=1e-6)


def test_time_conversions_round_trip():
    for t in (0.0, 0.25, 1.0):
        assert diffusion_to_bfn_time(bfn_to_diffusion_time(t)) == pytest.approx(t)
    tt = torch.rand(10, dtype=torch.float64)
    torch.testing.assert_close(diffusion_to_bfn_time(bfn_to_diffusion_time(tt)), tt)


def test_time_grid_matches_official_diffusion_grid():
    eta, n = 0.01, 10
    s_official = [(1 - eta) * (1 - k / n) for k in range(n + 1)]  # flip(arange(N+1))/N (1-eta)
    assert time_grid(n, eta) == pytest.approx([1 - s for s in s_official], abs=1e-15)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, float("nan"), "x"])
def test_bad_sigma1(bad):
    with pytest.raises(ValueError, match="sigma1"):
        ContinuousSchedule(bad)


def test_bad_discrete_schedule():
    with pytest.raises(ValueError, match="num_classes"):
        DiscreteSchedule(1, 1.0)
    with pytest.raises(ValueError, match="beta1"):
        DiscreteSchedule(3, -1.0)


@pytest.mark.parametrize("t", [-0.1, 1.5, float("nan")])
def test_time_outside_domain(t):
    s = ContinuousSchedule()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.gamma(t)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bfn_to_diffusion_time(t)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.tensor("gamma", torch.tensor([0.5, t]))
    with pytest.raises(ValueError, match="eta"):
        time_grid(5, 1.2)
