"""BFN training losses (Graves et al. 2023): continuous- and discrete-time, both data types.

A continuous denoiser is ``f(mu, t) -> x_hat``; a discrete one is ``f(theta, t) -> p`` (class
probabilities). Losses are averaged over the batch and summed over data dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from bfn_solver.flows import sample_mu, sample_theta
from bfn_solver.schedules import ContinuousSchedule, DiscreteSchedule

__all__ = [
    "continuous_time_loss",
    "discrete_continuous_time_loss",
    "discrete_n_step_loss",
    "n_step_loss",
]


def _check_t(t: torch.Tensor, n: int, lo: float = 0.0) -> None:
    if t.shape != (n,):
        raise ValueError(f"t must have shape (batch,)={(n,)}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all() or (t < lo).any() or (t > 1).any():
        raise ValueError("t must lie in [0, 1] (BFN time)")


def _check_finite(out: torch.Tensor, like: torch.Size) -> None:
    if out.shape != like:
        raise ValueError(f"denoiser returned shape {tuple(out.shape)}, expected {tuple(like)}")
    if not torch.isfinite(out).all():
        raise ValueError("denoiser returned non-finite values (NaN/inf)")


def continuous_time_loss(
    denoiser: Callable,
    x: torch.Tensor,
    schedule: ContinuousSchedule,
    t: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``L_inf = -ln(sigma1) E_t ||x - x_hat(mu, t)||^2 / sigma1^(2t)`` (Graves Eq. 101; dossier A2.1)."""
    if t is None:
        t = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    _check_t(t, x.shape[0])
    mu = sample_mu(x, t, schedule, generator)
    xh = denoiser(mu, t)
    _check_finite(xh, x.shape)
    se = (x - xh).square().flatten(1).sum(1)
    w = -math.log(schedule.sigma1) * torch.exp(-2.0 * t.double() * math.log(schedule.sigma1))
    return (w.to(x.dtype) * se).mean()


def n_step_loss(
    denoiser: Callable,
    x: torch.Tensor,
    schedule: ContinuousSchedule,
    n: int,
    i: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Discrete-time loss ``n alpha_i ||x - x_hat(mu, t_{i-1})||^2 / 2`` with ``i ~ U{1..n}``,
    ``alpha_i = sigma1^(-2i/n)(1 - sigma1^(2/n))`` (Graves Eq. 96)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if i is None:
        i = torch.randint(1, n + 1, (x.shape[0],), generator=generator, device=x.device)
    t = (i - 1).to(x.dtype) / n
    _check_t(t, x.shape[0])
    mu = sample_mu(x, t, schedule, generator)
    xh = denoiser(mu, t)
    _check_finite(xh, x.shape)
    ls1 = math.log(schedule.sigma1)
    alpha = torch.exp(-2.0 * i.double() / n * ls1) * (-math.expm1(2.0 * ls1 / n))
    se = (x - xh).square().flatten(1).sum(1)
    return (n * alpha.to(x.dtype) * se / 2).mean()


def discrete_continuous_time_loss(
    denoiser: Callable,
    x: torch.Tensor,
    schedule: DiscreteSchedule,
    t: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``L_inf = K beta1 E_t [ t ||e_x - x_hat(theta, t)||^2 ]`` summed over positions (Graves
    Eq. 204; = ``(K/2) beta'(t) ||.||^2``, DSM on the logits)."""
    if t is None:
        t = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=dtype)
    _check_t(t, x.shape[0])
    theta, _ = sample_theta(x, t, schedule, generator, dtype)
    p = denoiser(theta, t.to(dtype))
    _check_finite(p, theta.shape)
    e = torch.nn.functional.one_hot(x.long(), schedule.num_classes).to(dtype)
    se = (e - p).square().flatten(1).sum(1)
    return (schedule.num_classes * schedule.beta1 * t.to(dtype) * se).mean()


def discrete_n_step_loss(
    denoiser: Callable,
    x: torch.Tensor,
    schedule: DiscreteSchedule,
    n: int,
    i: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Discrete-time loss ``n E_i KL(sender || receiver)`` (Graves Eq. 183), estimated with one
    sample: sender ``N(alpha (K e_x - 1), alpha K I)``, receiver the mixture
    ``sum_k p(k | theta) N(alpha (K e_k - 1), alpha K I)``, ``alpha_i = beta1 (2i - 1)/n^2``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if i is None:
        i = torch.randint(1, n + 1, (x.shape[0],), generator=generator, device=x.device)
    K = schedule.num_classes
    t = (i - 1).to(dtype) / n
    _check_t(t, x.shape[0])
    theta, _ = sample_theta(x, t, schedule, generator, dtype)
    p = denoiser(theta, t)
    _check_finite(p, theta.shape)
    alpha = (schedule.beta1 * (2 * i - 1) / n**2).to(dtype).view(-1, 1, 1)
    e = torch.nn.functional.one_hot(x.long(), K).to(dtype)
    z = torch.randn(e.shape, generator=generator, device=x.device, dtype=dtype)
    y = alpha * (K * e - 1) + torch.sqrt(alpha * K) * z  # (B, L, K) sender sample

    def log_normal_iso(y, mean, var):  # sum over the K logit dims
        return (-0.5 * (y - mean).square() / var - 0.5 * torch.log(2 * math.pi * var)).sum(-1)

    log_sender = log_normal_iso(y, alpha * (K * e - 1), alpha * K)  # (B, L)
    eye = torch.eye(K, dtype=dtype, device=x.device)
    a4 = alpha[..., None]  # (B, 1, 1, 1)
    means = a4 * (K * eye - 1)  # (B, 1, K, K): row k is component k's mean
    comp = log_normal_iso(y[:, :, None, :], means, a4 * K)  # (B, L, K)
    log_recv = torch.logsumexp(comp + p.clamp_min(1e-30).log(), -1)
    return (n * (log_sender - log_recv).sum(1)).mean()
