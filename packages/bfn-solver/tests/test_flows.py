import math

import torch
from bfn_solver import ContinuousSchedule, DiscreteSchedule
from bfn_solver.flows import bayesian_updates, sample_mu, sample_theta


def _z(sample_mean, mean, var, n):
    return abs(sample_mean - mean) / math.sqrt(var / n)


def test_sequential_updates_match_flow_marginal_continuous():
    sc = ContinuousSchedule(0.05)
    n_mc = 40000
    x = torch.full((n_mc, 1), 0.7, dtype=torch.float64)
    mu = bayesian_updates(x, 13, sc, torch.Generator().manual_seed(0))
    g = sc.gamma(1.0)
    assert _z(mu.mean().item(), g * 0.7, g * (1 - g), n_mc) < 5
    assert abs(mu.var().item() / (g * (1 - g)) - 1) < 5 * math.sqrt(2 / n_mc)
    # and the one-shot flow sampler
    mu2 = sample_mu(x, 1.0, sc, torch.Generator().manual_seed(1))
    assert _z(mu2.mean().item(), g * 0.7, g * (1 - g), n_mc) < 5


def test_sequential_updates_match_flow_marginal_discrete():
    sc = DiscreteSchedule(4, 1.5)
    n_mc = 40000
    x = torch.full((n_mc, 1), 2)
    y = bayesian_updates(x, 9, sc, torch.Generator().manual_seed(0))
    beta, K = sc.beta(1.0), 4
    mean = beta * (K * torch.nn.functional.one_hot(torch.tensor(2), K).double() - 1)
    for k in range(K):
        assert _z(y[:, 0, k].mean().item(), mean[k].item(), beta * K, n_mc) < 5
        assert abs(y[:, 0, k].var().item() / (beta * K) - 1) < 5 * math.sqrt(2 / n_mc)
    theta, y2 = sample_theta(x, 1.0, sc, torch.Generator().manual_seed(2), torch.float64)
    assert _z(y2[:, 0, 2].mean().item(), mean[2].item(), beta * K, n_mc) < 5
    torch.testing.assert_close(theta, torch.softmax(y2, -1))


def test_forward_sde_euler_maruyama_reproduces_marginals():
    """Integrate dmu = f mu ds + g dw from s = 0 (mu = x) to s = 1 - t and compare moments."""
    sc = ContinuousSchedule(0.02)
    n_mc, steps, t_end = 20000, 2000, 0.3
    gen = torch.Generator().manual_seed(3)
    mu = torch.full((n_mc,), 0.5, dtype=torch.float64)
    s_end = 1 - t_end
    ds = s_end / steps
    for k in range(steps):
        s = k * ds
        mu = (
            mu
            + sc.f(s) * mu * ds
            + math.sqrt(sc.g2(s) * ds) * torch.randn(n_mc, generator=gen, dtype=torch.float64)
        )
    g = sc.gamma(t_end)
    assert _z(mu.mean().item(), g * 0.5, g * (1 - g), n_mc) < 5
    assert abs(mu.var().item() / (g * (1 - g)) - 1) < 0.05


def test_forward_sde_discrete_reproduces_marginals():
    sc = DiscreteSchedule(3, 2.0)
    n_mc, steps, t_end = 20000, 2000, 0.6
    gen = torch.Generator().manual_seed(4)
    a = torch.tensor([2.0, -1.0, -1.0], dtype=torch.float64)  # K e_x - 1 for x = 0
    # start close to the data: y(s0) = beta(1 - s0)(K e - 1), exact mean at s0, negligible var
    s0 = 1e-4
    y = sc.beta(1 - s0) * a.expand(n_mc, 3).clone() + math.sqrt(3 * sc.beta(1 - s0)) * torch.randn(
        n_mc, 3, generator=gen, dtype=torch.float64
    )
    ds = (1 - t_end - s0) / steps
    for k in range(steps):
        s = s0 + k * ds
        y = (
            y
            + sc.f(s) * y * ds
            + math.sqrt(sc.g2(s) * ds) * torch.randn(n_mc, 3, generator=gen, dtype=torch.float64)
        )
    beta = sc.beta(t_end)
    assert _z(y[:, 0].mean().item(), beta * 2, beta * 3, n_mc) < 5
    assert abs(y[:, 1].var().item() / (beta * 3) - 1) < 0.05
