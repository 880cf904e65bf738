"""Bayesian flow distributions: the training-time inputs of a BFN (Graves et al. 2023, Sec. 4-6).

- continuous: ``mu | x, t ~ N(gamma x, gamma (1 - gamma) I)``;
- discrete: ``y | x, t ~ N(beta (K e_x - 1), beta K I)`` and ``theta = softmax(y)``.

:func:`bayesian_updates` runs the sequential Bayesian updates they summarise (used by tests to
check the marginals).
"""

from __future__ import annotations

import math

import torch

from bfn_solver.ops import class_softmax
from bfn_solver.schedules import ContinuousSchedule, DiscreteSchedule

__all__ = ["bayesian_updates", "sample_mu", "sample_theta"]


def _t_col(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"t must be a scalar or shape (batch,)={(x.shape[0],)}, got {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError("t must lie in [0, 1] (BFN time)")
    return t


def sample_mu(
    x: torch.Tensor,
    t: torch.Tensor | float,
    schedule: ContinuousSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``mu ~ N(gamma(t) x, gamma(t)(1 - gamma(t)) I)`` (continuous Bayesian flow)."""
    t = _t_col(t, x)
    g = schedule.tensor("gamma", t).to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return g * x + torch.sqrt(g * (1 - g)) * z


def sample_theta(
    x: torch.Tensor,
    t: torch.Tensor | float,
    schedule: DiscreteSchedule,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw logits ``y ~ N(beta (K e_x - 1), beta K I)`` for class indices ``x`` (batch, L);
    returns ``(theta, y)`` with ``theta = softmax(y)``."""
    if (
        x.dtype not in (torch.int64, torch.int32)
        or (x < 0).any()
        or (x >= schedule.num_classes).any()
    ):
        raise ValueError(f"x must hold integer classes in [0, {schedule.num_classes})")
    t = _t_col(t, x)
    K = schedule.num_classes
    beta = (schedule.beta1 * t * t).to(dtype).view((-1,) + (1,) * x.dim())
    e = torch.nn.functional.one_hot(x.long(), K).to(dtype)
    z = torch.randn(e.shape, generator=generator, device=x.device, dtype=dtype)
    y = beta * (K * e - 1) + torch.sqrt(beta * K) * z
    return class_softmax(y), y


def bayesian_updates(
    x: torch.Tensor,
    n: int,
    schedule: ContinuousSchedule | DiscreteSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run ``n`` sequential Bayesian updates with Graves' accuracies from the prior; returns the
    state at t = 1 (``mu`` for continuous x, logits ``y`` for discrete x of class indices)."""
    if isinstance(schedule, ContinuousSchedule):
        mu, rho = torch.zeros_like(x), 1.0
        for i in range(1, n + 1):
            a = schedule.step_accuracy(i, n)
            y = x + torch.randn(x.shape, generator=generator, dtype=x.dtype) / math.sqrt(a)
            mu, rho = (rho * mu + a * y) / (rho + a), rho + a
        return mu
    K = schedule.num_classes
    e = torch.nn.functional.one_hot(x.long(), K).double()
    y = torch.zeros_like(e)
    for i in range(1, n + 1):
        a = schedule.step_accuracy(i, n)
        y = (
            y
            + a * (K * e - 1)
            + math.sqrt(a * K) * torch.randn(e.shape, generator=generator, dtype=e.dtype)
        )
    return y
