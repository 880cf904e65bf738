import math

import pytest
import torch
from bfn_solver import ContinuousSchedule, DiscreteSchedule, MarkovChainOracle
from bfn_solver.losses import (
    continuous_time_loss,
    discrete_continuous_time_loss,
    discrete_n_step_loss,
    n_step_loss,
)

SC = ContinuousSchedule(1e-2)
DS = DiscreteSchedule(4, 2.0)


def test_continuous_loss_known_values():
    x = torch.full((3, 2), 0.5, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    zero = lambda mu, t: torch.zeros_like(mu)  # noqa: E731
    w = -math.log(1e-2) * (1e-2 ** (-2 * t))
    expected = (w * 2 * 0.25).mean()
    assert float(continuous_time_loss(zero, x, SC, t)) == pytest.approx(float(expected), rel=1e-12)
    perfect = lambda mu, tt: x  # noqa: E731
    assert float(continuous_time_loss(perfect, x, SC, t)) == 0.0


def test_n_step_loss_tends_to_continuous_loss():
    """With x_hat = 0 both losses are deterministic in x: E_i[n alpha_i/2] -> -ln s1 E_t[s1^-2t]."""
    x = torch.full((1, 1), 1.0, dtype=torch.float64)
    zero = lambda mu, t: torch.zeros_like(mu)  # noqa: E731
    cont = -math.log(1e-2) * (1e-2**-2 - 1) / (-2 * math.log(1e-2))  # E_t[-ln s1 s1^-2t]
    for n, tol in [(10, 0.3), (1000, 0.01)]:
        vals = [float(n_step_loss(zero, x, SC, n, i=torch.tensor([i]))) for i in range(1, n + 1)]
        assert sum(vals) / n == pytest.approx(cont, rel=tol)
    assert float(continuous_time_loss(zero, x, SC, torch.tensor([0.5], dtype=torch.float64))) > 0


def test_discrete_losses_known_values():
    x = torch.tensor([[0, 3], [2, 1]])
    t = torch.tensor([0.5, 1.0])
    uniform = lambda th, t: torch.full_like(th, 0.25)  # noqa: E731
    # K beta1 t ||e_x - 1/K||^2 summed over L = 2 positions: ||.||^2 = 1 - 1/K
    expected = (4 * 2.0 * t * 2 * (1 - 0.25)).mean()
    assert float(discrete_continuous_time_loss(uniform, x, DS, t)) == pytest.approx(
        float(expected), rel=1e-6
    )
    perfect = lambda th, tt: torch.nn.functional.one_hot(x, 4).float()  # noqa: E731
    assert float(discrete_continuous_time_loss(perfect, x, DS, t)) == 0.0
    # n-step KL is exactly 0 when the receiver is the sender
    assert abs(float(discrete_n_step_loss(perfect, x, DS, 10))) < 1e-4
    assert (
        float(discrete_n_step_loss(uniform, x, DS, 10, generator=torch.Generator().manual_seed(0)))
        > 0
    )


def test_oracle_beats_perturbed_denoiser():
    ch = MarkovChainOracle.random_sparse(4, 5, 2, seed=0)
    x = ch.sample(4000, torch.Generator().manual_seed(0))

    def perturbed(th, t):
        p = ch(th, t)
        return 0.7 * p + 0.3 * torch.roll(p, 1, -1)

    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    lo = float(discrete_continuous_time_loss(ch, x, DS, generator=g1))
    hi = float(discrete_continuous_time_loss(perturbed, x, DS, generator=g2))
    assert lo < hi


def test_loss_bad_input():
    x = torch.zeros(2, 2)
    zero = lambda mu, t: torch.zeros_like(mu)  # noqa: E731
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        continuous_time_loss(zero, x, SC, torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="shape"):
        continuous_time_loss(zero, x, SC, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="non-finite"):
        continuous_time_loss(lambda m, t: m * float("nan"), x, SC)
    with pytest.raises(ValueError, match="expected"):
        continuous_time_loss(lambda m, t: m[:, :1], x, SC)
    with pytest.raises(ValueError, match="n must"):
        n_step_loss(zero, x, SC, 0)
    with pytest.raises(ValueError, match="integer classes"):
        discrete_continuous_time_loss(lambda th, t: th, torch.tensor([[0, 7]]), DS)
