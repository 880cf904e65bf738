"""Oracle denoisers against brute force / Monte Carlo."""

import math

import pytest
import torch
from bfn_solver import (
    ContinuousSchedule,
    EmpiricalOracle,
    FactorizedOracle,
    GaussianMixtureOracle,
    GaussianOracle,
    JointTableOracle,
    MarkovChainOracle,
)

SC = ContinuousSchedule(1e-2)


def test_gmm_posterior_mean_vs_importance_sampling():
    g = torch.Generator().manual_seed(0)
    gmm = GaussianMixtureOracle(
        torch.tensor([[0.5, -0.2], [-0.4, 0.3], [0.0, 0.6]]),
        torch.tensor([0.1, 0.2, 0.15]),
        torch.tensor([0.5, 0.3, 0.2]),
        SC,
    )
    t = 0.3
    gam = SC.gamma(t)
    mu = torch.tensor([[0.05, 0.02], [-0.1, 0.08]], dtype=torch.float64)
    xs, _ = gmm.sample(400_000, g)
    # weights p(mu | x) = N(mu; gamma x, gamma (1 - gamma))
    for i in range(2):
        logw = -((mu[i] - gam * xs) ** 2).sum(-1) / (2 * gam * (1 - gam))
        w = torch.softmax(logw, 0)
        ref = (w[:, None] * xs).sum(0)
        ess = 1 / (w**2).sum()
        out = gmm(mu[i : i + 1], torch.tensor([t], dtype=torch.float64))[0]
        assert ess > 1000
        torch.testing.assert_close(out, ref, rtol=0, atol=5e-3)


def test_gmm_prior_mean_at_t0_and_data_at_t1():
    gmm = GaussianMixtureOracle(
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.1, torch.tensor([0.25, 0.75]), SC
    )
    out = gmm(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[0.25, 0.75]] * 3, dtype=torch.float64))
    x = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    out1 = gmm(SC.gamma(1.0) * x, torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(out1, x, rtol=0, atol=1e-3)


def test_single_gaussian_equals_one_component_mixture():
    go = GaussianOracle(0.2, 0.3, SC)
    gm = GaussianMixtureOracle(torch.full((1, 3), 0.2), 0.3, schedule=SC)
    mu = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    torch.testing.assert_close(go(mu, t), gm(mu, t))


def test_empirical_oracle_matches_tiny_std_mixture():
    pts = torch.tensor([[0.3, -0.3], [-0.5, 0.5], [0.1, 0.9]], dtype=torch.float64)
    emp = EmpiricalOracle(pts, SC)
    gmm = GaussianMixtureOracle(pts, 1e-9, schedule=SC)
    mu = torch.randn(7, 2, dtype=torch.float64) * 0.3
    t = torch.full((7,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(emp(mu, t), gmm(mu, t), rtol=0, atol=1e-9)


def test_forward_backward_equals_brute_force():
    ch = MarkovChainOracle.random_sparse(3, 4, 2, seed=1)
    jt = JointTableOracle(ch.log_prob, 4, 3)
    theta = torch.softmax(2 * torch.randn(6, 4, 3, dtype=torch.float64), -1)
    torch.testing.assert_close(ch(theta, None), jt(theta, None), rtol=0, atol=1e-12)
    # uniform theta -> prior marginals
    uni = torch.full((1, 4, 3), 1 / 3, dtype=torch.float64)
    torch.testing.assert_close(ch(uni, None)[0], ch.marginals(), rtol=0, atol=1e-12)


def test_factorized_equals_brute_force():
    probs = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    fo = FactorizedOracle(probs)

    def logp(seqs):
        return torch.log(probs[torch.arange(3), seqs]).sum(-1)

    jt = JointTableOracle(logp, 3, 2)
    theta = torch.softmax(torch.randn(4, 3, 2, dtype=torch.float64), -1)
    torch.testing.assert_close(fo(theta, None), jt(theta, None), rtol=0, atol=1e-12)


def test_markov_chain_sampling_and_log_prob():
    ch = MarkovChainOracle.random_sparse(5, 6, 2, seed=0)
    x = ch.sample(20000, torch.Generator().manual_seed(0))
    assert torch.isfinite(ch.log_prob(x)).all()
    # Monte Carlo entropy matches the exact one
    assert float(-ch.log_prob(x).mean()) == pytest.approx(ch.entropy(), rel=0.02)
    emp = torch.nn.functional.one_hot(x, 5).double().mean(0)
    torch.testing.assert_close(emp, ch.marginals(), rtol=0, atol=0.02)


def test_oracle_bad_input():
    with pytest.raises(ValueError, match="components, dim"):
        GaussianMixtureOracle(torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match=r"theta must be \(batch, 4, 3\)"):
        MarkovChainOracle.random_sparse(3, 4)(torch.zeros(2, 5, 3), None)
    with pytest.raises(ValueError, match="K\\^L"):
        JointTableOracle(lambda s: s.sum(-1), 20, 4)
    with pytest.raises(ValueError, match="std"):
        GaussianOracle(0.0, -1.0)
    assert math.isfinite(GaussianOracle(0.0, 1.0).flow_map(torch.zeros(1), 0.1, 0.5).item())
