"""Issue 17: official single-step last step, CLI fixes, schedules that travel with denoisers,
BFN-Solver++3."""

import math

import pytest
import torch
from bfn_solver import (
    CONTINUOUS_SAMPLERS,
    DISCRETE_SAMPLERS,
    ContinuousSchedule,
    DiscreteSchedule,
    FactorizedOracle,
    GaussianMixtureOracle,
    GaussianOracle,
    sample_bfn_solver_pp2,
    sample_bfn_solver_pp3,
    sample_discrete_bfn_solver2,
    sample_discrete_bfn_solver2_singlestep,
)
from bfn_solver.__main__ import main
from bfn_solver.bench import convergence_orders


def _official_singlestep(den, y, n_steps, K, beta1, eta):
    """The official ``ode_bfnsolver2_single_step_upate`` loop with ``last_drop=True``, written in
    diffusion time as there (s: current, t: next, r: midpoint); returns the last x_hat_r."""
    times = [(n_steps - k) / n_steps * (1 - eta) for k in range(n_steps + 1)]
    calls = 0
    for step in range(n_steps):
        t_s, t_t = times[step], times[step + 1]
        t_r = (t_s + t_t) / 2
        c_r, c_t = K * beta1 * (1 - t_r), K * beta1 * (1 - t_t)
        x_s = den(torch.softmax(y, -1), torch.full((y.shape[0],), 1 - t_s, dtype=y.dtype))
        y_r = (1 - t_r) / (1 - t_s) * y + c_r * (t_r - t_s) * (1 / K - x_s)
        x_r = den(torch.softmax(y_r, -1), torch.full((y.shape[0],), 1 - t_r, dtype=y.dtype))
        calls += 2
        if step == n_steps - 1:
            return x_r, calls
        d1 = (x_r - x_s) / (t_r - t_s)
        y = (
            (1 - t_t) / (1 - t_s) * y
            + c_t / K * (t_t - t_s)
            - c_t * (t_t - t_s) * x_s
            - c_t * (t_t - t_s) ** 2 / 2 * d1
        )


@pytest.mark.parametrize("nfe", [4, 10, 11])
def test_singlestep_default_last_step_is_the_official_one(nfe):
    K, beta1, eta = 5, 3.0, 1e-3
    sc = DiscreteSchedule(K, beta1)
    probs = torch.softmax(torch.randn(4, K, generator=torch.Generator().manual_seed(3)), -1)
    ora = FactorizedOracle(probs)
    y0 = torch.randn(64, 4, K, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y0 = y0 * math.sqrt(K * sc.beta(eta))
    ref, calls = _official_singlestep(ora, y0.clone(), nfe // 2, K, beta1, eta)
    r = sample_discrete_bfn_solver2_singlestep(
        ora, None, nfe, sc, eta=eta, x_init=y0, dtype=torch.float64
    )
    assert r.nfe == calls == 2 * (nfe // 2)
    torch.testing.assert_close(r.probs, ref, rtol=0, atol=1e-12)
    grid = [eta + (1 - eta) * k / (nfe // 2) for k in range(nfe // 2 + 1)]
    assert r.times[-1] == pytest.approx((grid[-2] + grid[-1]) / 2)
    # the 0.1.0 behaviour stays available by name: x_hat at t_{N-1}, 2N - 1 NFE
    old = sample_discrete_bfn_solver2_singlestep(
        ora, None, nfe, sc, eta=eta, x_init=y0, dtype=torch.float64, last_step="drop_first"
    )
    assert old.nfe == 2 * ((nfe - 1) // 2) + 1 and old.times[-1] < r.times[-1]


def test_singlestep_official_drop_needs_two_nfe():
    sc = DiscreteSchedule(3, 2.0)
    ora = FactorizedOracle(torch.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="nfe >= 2"):
        sample_discrete_bfn_solver2_singlestep(ora, (2, 2, 3), 1, sc)
    with pytest.raises(ValueError, match="last_step"):
        sample_discrete_bfn_solver2(ora, (2, 2, 3), 4, sc, last_step="drop_first")


def test_sample_help_lists_the_samplers(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = capsys.readouterr().out
    for nm in (*CONTINUOUS_SAMPLERS, *DISCRETE_SAMPLERS):
        assert nm in out, nm
    assert "--eta" in out


def test_sample_eta_reaches_the_sampler(tmp_path):
    from bfn_solver.experiments import gmm_suite

    out = tmp_path / "s.pt"
    argv = ["sample", "--suite", "gmm", "--sampler", "bfn_solver_pp1", "--nfe", "5", "--n", "20"]
    assert main([*argv, "--eta", "0.01", "--out", str(out)]) == 0
    got = torch.load(out, weights_only=True)
    s = gmm_suite(n=20)
    want = CONTINUOUS_SAMPLERS["bfn_solver_pp1"](
        s.denoiser, s.shape, 5, s.schedule, eta=0.01, generator=torch.Generator().manual_seed(0)
    ).samples
    torch.testing.assert_close(got, want)
    assert main([*argv, "--eta", "1e-3", "--out", str(out)]) == 0
    assert not torch.equal(torch.load(out, weights_only=True), got)


def test_a_sample_file_as_checkpoint_gets_a_clear_error(tmp_path, capsys):
    f = tmp_path / "samples.pt"
    torch.save(torch.zeros(10, 64), f)
    assert main(["sample", "--checkpoint", str(f)]) == 2
    err = capsys.readouterr().err
    assert "not a checkpoint written by `python -m bfn_solver train`" in err
    assert "too many indices" not in err


def test_original_sampler_nfe1_error_names_the_real_cause(capsys):
    assert main(["sample", "--suite", "gmm", "--sampler", "bfn_original", "--nfe", "1"]) == 2
    err = capsys.readouterr().err
    assert "bfn_original" in err and "nfe >= 2" in err and "last_step" not in err


def test_unknown_sampler_name_lists_the_choices():
    with pytest.raises(KeyError, match=r"unknown continuous sampler 'name'.*bfn_solver_pp2"):
        CONTINUOUS_SAMPLERS["name"]
    with pytest.raises(KeyError, match=r"unknown discrete sampler.*bfn_solver2_singlestep"):
        DISCRETE_SAMPLERS["nope"]
    assert "bfn_solver_pp3" in CONTINUOUS_SAMPLERS


def test_markov_suite_error_is_printed_with_its_floor(capsys):
    assert main(["sample", "--suite", "markov", "--nfe", "5", "--n", "200"]) == 0
    out = capsys.readouterr().out
    assert "sampling floor" in out and "bigram TV" in out


def test_schedule_travels_with_oracles_and_mismatches_are_refused():
    sc = ContinuousSchedule(1e-2)
    gmm = GaussianMixtureOracle(torch.tensor([[0.5, 0.5], [-0.5, -0.2]]), 0.05, schedule=sc)
    kw = dict(generator=torch.Generator().manual_seed(0))
    a = sample_bfn_solver_pp2(gmm, (50, 2), 8, **kw)  # default: the oracle's schedule
    b = sample_bfn_solver_pp2(gmm, (50, 2), 8, sc, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.samples, b.samples)
    with pytest.raises(ValueError, match=r"sigma1=0\.001.*sigma1=0\.01"):
        sample_bfn_solver_pp2(gmm, (50, 2), 8, ContinuousSchedule(1e-3))


def test_schedule_travels_with_checkpoints(tmp_path):
    from bfn_solver.models import DiscreteMLP
    from bfn_solver.training import load_checkpoint, save_checkpoint

    m = DiscreteMLP(4, 3, hidden=16)
    sc = DiscreteSchedule(3, 2.5)
    save_checkpoint(tmp_path / "m.pt", m, sc, task="markov")
    den, sc2, meta = load_checkpoint(tmp_path / "m.pt")
    assert sc2 == sc and den.schedule == sc and meta["task"] == "markov"
    with torch.no_grad():
        r = sample_discrete_bfn_solver2(den, (3, 4, 3), 4, sc)
        assert r.nfe == 4
        with pytest.raises(ValueError, match=r"beta1=2\.5.*beta1=3\.0|beta1=3\.0.*beta1=2\.5"):
            sample_discrete_bfn_solver2(den, (3, 4, 3), 4, DiscreteSchedule(3, 3.0))
    f = tmp_path / "bad.pt"
    torch.save(torch.zeros(3), f)
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(f)


def test_bfn_solver_pp3_is_third_order_on_the_exact_gaussian_flow():
    kw = dict(steps=(10, 20, 40, 80, 160), eta=0.05)
    o = convergence_orders(samplers=("bfn_solver_pp3",), **kw)
    p2 = convergence_orders(samplers=("bfn_solver_pp2",), **kw)
    assert o["bfn_solver_pp3"]["order"] == pytest.approx(3.0, abs=0.2)
    assert p2["bfn_solver_pp2"]["order"] < 2.2
    assert o["bfn_solver_pp3"]["errors"][-1] < 0.2 * p2["bfn_solver_pp2"]["errors"][-1]


def test_pp3_update_integrates_a_quadratic_prediction_exactly():
    # x_hat(lambda) = c (lambda + d)^2, independent of mu: every third-order step must equal
    # the exact exponential integral mu_b = (sigma_b/sigma_a) mu_a + sigma_b int e^l x(l) dl
    # (the often-quoted D2 coefficient (e^-h - 1 + h)/h^2 - 1/2 is off by a factor of 2 and
    # leaves an O(h^3) error here)
    sc = ContinuousSchedule(1e-3)
    c, d = 0.7, 1.3

    def den(mu, t):
        lam = torch.tensor([sc.lam(float(v)) for v in t], dtype=mu.dtype)
        return (c * (lam + d) ** 2)[:, None].expand_as(mu)

    def prim(lam):  # antiderivative of e^l c (l + d)^2
        z = lam + d
        return math.exp(lam) * c * (z * z - 2 * z + 2)

    r = sample_bfn_solver_pp3(
        den,
        (3, 2),
        6,
        sc,
        eta=0.05,
        clip=None,
        dtype=torch.float64,
        last_step="state",
        start="euler",
        return_trajectory=True,
    )
    ts, traj = r.times, r.trajectory
    grid = [0.05] + [sc.t_of_lam(v) for v in [sc.lam(float(t)) for t in ts[1:]]] + [1.0]
    for k in range(2, 6):
        a, b = grid[k], grid[k + 1]
        la, lb = sc.lam(a), sc.lam(b)
        want = sc.sigma(b) / sc.sigma(a) * traj[k] + sc.sigma(b) * (prim(lb) - prim(la))
        torch.testing.assert_close(traj[k + 1], want, rtol=1e-10, atol=1e-10)


def test_bfn_solver_pp3_counts_nfe_and_starts_like_pp2():
    sc = ContinuousSchedule(1e-3)
    g = GaussianOracle(0.2, 0.4, sc)
    kw = dict(generator=torch.Generator().manual_seed(1), dtype=torch.float64, clip=None)
    r3 = sample_bfn_solver_pp3(g, (16, 3), 10, sc, **kw)
    assert r3.nfe == 10
    # DPM-Solver++(3M)'s own start (start="euler"): two steps have no third-order history
    # yet, so they equal ++2 bit for bit
    x0 = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x0 = x0 * sc.sigma(1e-3)
    kw = dict(x_init=x0, last_step="state", clip=None, dtype=torch.float64, grid="lambda")
    a = sample_bfn_solver_pp3(g, None, 2, sc, start="euler", **kw)
    b = sample_bfn_solver_pp2(g, None, 2, sc, **kw)
    torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=0)
    assert a.nfe == 2 and sample_bfn_solver_pp3(g, None, 3, sc, **kw).nfe == 3
    assert sample_bfn_solver_pp3(g, (4, 3), 1, sc).nfe == 1  # too small for the midpoint start
