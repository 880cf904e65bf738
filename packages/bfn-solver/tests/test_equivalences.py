"""Exact equivalences (float64, shared noise): Prop. 4.2 and its discrete analogue."""

import pytest
import torch
from bfn_solver import (
    ContinuousSchedule,
    DiscreteSchedule,
    GaussianMixtureOracle,
    MarkovChainOracle,
    sample_bfn_original,
    sample_bfn_solver1,
    sample_bfn_solver_pp1,
    sample_discrete_bfn_original,
    sample_discrete_bfn_solver1,
    sample_discrete_sde_bfn_solver1,
    sample_sde_bfn_solver_pp1,
)

SC = ContinuousSchedule(1e-3)


def _gmm():
    g = torch.Generator().manual_seed(0)
    return GaussianMixtureOracle(
        torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.5, 0.1, schedule=SC
    )


@pytest.mark.parametrize("n", [1, 4, 25])
@pytest.mark.parametrize("clip", [None, (-1.0, 1.0)])
def test_original_equals_sde_solver_pp1_on_uniform_grid(n, clip):
    den = _gmm()
    a = sample_bfn_original(
        den,
        (64, 4),
        n + 1,
        SC,
        clip=clip,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(5),
        return_trajectory=True,
    )
    b = sample_sde_bfn_solver_pp1(
        den,
        (64, 4),
        n + 1,
        SC,
        eta=0.0,
        clip=clip,
        last_step="denoise",
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(5),
        return_trajectory=True,
    )
    assert a.nfe == b.nfe == n + 1
    assert a.times == pytest.approx(b.times, abs=1e-15)
    torch.testing.assert_close(a.samples, b.samples, rtol=0, atol=1e-10)
    for u, v in zip(a.trajectory, b.trajectory, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-10)


def test_equivalence_detects_a_different_grid():
    """The equality is specific to the grid i/n: a shifted start breaks it (the test can fail)."""
    den = _gmm()
    a = sample_bfn_original(
        den, (64, 4), 6, SC, dtype=torch.float64, generator=torch.Generator().manual_seed(5)
    )
    b = sample_sde_bfn_solver_pp1(
        den,
        (64, 4),
        6,
        SC,
        eta=0.05,
        last_step="denoise",
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(5),
    )
    assert (a.samples - b.samples).abs().max() > 1e-3


@pytest.mark.parametrize("last_step", ["drop", "denoise", "state"])
@pytest.mark.parametrize("grid", ["time", "lambda"])
def test_solver1_noise_form_equals_data_form(last_step, grid):
    den = _gmm()
    kw = dict(eta=1e-3, last_step=last_step, dtype=torch.float64, grid=grid, clip=(-0.3, 0.3))
    a = sample_bfn_solver1(den, (32, 4), 12, SC, generator=torch.Generator().manual_seed(1), **kw)
    b = sample_bfn_solver_pp1(
        den, (32, 4), 12, SC, generator=torch.Generator().manual_seed(1), **kw
    )
    torch.testing.assert_close(a.samples, b.samples, rtol=1e-9, atol=1e-9)


def _chain():
    return MarkovChainOracle.random_sparse(4, 5, 2, seed=3), DiscreteSchedule(4, 3.0)


@pytest.mark.parametrize("categorical", [True, False])
def test_discrete_original_equals_sde_solver1(categorical):
    ch, sc = _chain()
    kw = dict(dtype=torch.float64, return_trajectory=True)
    a = sample_discrete_bfn_original(
        ch,
        (50, 5, 4),
        9,
        sc,
        categorical=categorical,
        generator=torch.Generator().manual_seed(2),
        **kw,
    )
    b = sample_discrete_sde_bfn_solver1(
        ch,
        (50, 5, 4),
        9,
        sc,
        eta=0.0,
        categorical=categorical,
        last_step="denoise",
        generator=torch.Generator().manual_seed(2),
        **kw,
    )
    for u, v in zip(a.trajectory, b.trajectory, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-10)
    torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=1e-10)
    assert torch.equal(a.samples, b.samples)


def test_discrete_solver1_is_ddim_on_rescaled_logits():
    """On y/beta (a VE diffusion with sigma^2 = K/beta), Solver1 is DDIM:
    y_b/beta_b = m + (sigma_b/sigma_a)(y_a/beta_a - m), m = K x_hat - 1."""
    ch, sc = _chain()
    a_t, b_t = 0.3, 0.55
    y = torch.randn(20, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    res = sample_discrete_bfn_solver1(
        ch,
        None,
        2,
        sc,
        eta=a_t,
        last_step="state",
        x_init=y,
        dtype=torch.float64,
        return_trajectory=True,
    )
    # the grid is (a_t, (a_t+1)/2, 1): check the first step
    b_t = res.times[1] if len(res.times) > 1 else (a_t + 1) / 2
    x = ch(torch.softmax(y, -1), torch.full((20,), a_t, dtype=torch.float64))
    m = 4 * x - 1
    sa, sb = (4 / sc.beta(a_t)) ** 0.5, (4 / sc.beta(b_t)) ** 0.5
    ddim = sc.beta(b_t) * (m + (sb / sa) * (y / sc.beta(a_t) - m))
    torch.testing.assert_close(res.trajectory[1], ddim, rtol=1e-12, atol=1e-12)
