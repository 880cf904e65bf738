"""Noise schedules of Bayesian Flow Networks and their SDEs (paper Sec. 4.1 / 5.1).

Two time axes are used throughout (dossier A1):

- **BFN time** ``t`` in [0, 1]: 0 is the prior, 1 is (nearly) the data. Denoisers are always
  called with BFN time.
- **Diffusion time** ``s = 1 - t``: the time of the forward SDE. Helpers convert between them.

All scalar coefficients are computed in float64 with ``expm1``/``log1p`` (1 - gamma is 1e-6 at
t = 1 for sigma1 = 1e-3), then cast by the samplers to the working dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "ContinuousSchedule",
    "DiscreteSchedule",
    "bfn_to_diffusion_time",
    "diffusion_to_bfn_time",
    "time_grid",
]


def _check_t(t: float | torch.Tensor, name: str = "t") -> None:
    if isinstance(t, torch.Tensor):
        if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
            raise ValueError(f"{name} must lie in [0, 1] (BFN time); got values outside it")
    elif not (isinstance(t, int | float) and 0.0 <= float(t) <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1] (BFN time), got {t!r}")


def bfn_to_diffusion_time(t: float | torch.Tensor) -> float | torch.Tensor:
    """BFN time ``t`` (0 = prior, 1 = data) -> diffusion time ``s = 1 - t``."""
    _check_t(t)
    return 1 - t


def diffusion_to_bfn_time(s: float | torch.Tensor) -> float | torch.Tensor:
    """Diffusion time ``s`` (0 = data, 1 = prior) -> BFN time ``t = 1 - s``."""
    _check_t(s, "s")
    return 1 - s


def time_grid(steps: int, eta: float, t_end: float = 1.0) -> list[float]:
    """The uniform BFN-time grid of the official code: ``t_k = eta + (t_end - eta) k / steps``.

    The official code builds ``s_k = (1 - eta)(1 - k/N)`` in diffusion time; this is the same grid
    in BFN time (k = 0..steps), returned as float64 Python floats.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not (0.0 <= eta < t_end <= 1.0):
        raise ValueError(f"need 0 <= eta < t_end <= 1, got eta={eta}, t_end={t_end}")
    return [eta + (t_end - eta) * k / steps for k in range(steps + 1)]


@dataclass(frozen=True)
class ContinuousSchedule:
    """Continuous-data BFN: ``gamma(t) = 1 - sigma1^(2t)`` (Graves et al. 2023, Sec. 4; paper Thm 4.1).

    The Bayesian flow is ``mu | x, t ~ N(gamma x, gamma (1 - gamma) I)``: a VP diffusion with
    ``alpha_t = gamma`` and ``sigma_t = sqrt(gamma (1 - gamma))``. The accumulated accuracy is
    ``beta_acc(t) = sigma1^(-2t) - 1`` and the half log-SNR is ``lambda = 0.5 ln beta_acc``.
    """

    sigma1: float = 1e-3

    def __post_init__(self) -> None:
        if not (isinstance(self.sigma1, int | float) and 0.0 < self.sigma1 < 1.0):
            raise ValueError(f"sigma1 must lie in (0, 1), got {self.sigma1!r}")

    @property
    def _log_s1(self) -> float:
        return math.log(self.sigma1)

    # --- marginals (BFN time t) -----------------------------------------------------------
    def accuracy(self, t: float) -> float:
        """Accumulated accuracy ``beta_acc(t) = sigma1^(-2t) - 1`` (= rho(t) - 1)."""
        _check_t(t)
        return math.expm1(-2.0 * t * self._log_s1)

    def precision(self, t: float) -> float:
        """Input precision ``rho(t) = sigma1^(-2t) = 1 + beta_acc(t)``."""
        _check_t(t)
        return math.exp(-2.0 * t * self._log_s1)

    def gamma(self, t: float) -> float:
        """``gamma(t) = 1 - sigma1^(2t)`` = ``alpha_t`` of the VP form."""
        _check_t(t)
        return -math.expm1(2.0 * t * self._log_s1)

    def one_minus_gamma(self, t: float) -> float:
        _check_t(t)
        return math.exp(2.0 * t * self._log_s1)

    def alpha(self, t: float) -> float:
        return self.gamma(t)

    def sigma(self, t: float) -> float:
        """``sigma_t = sqrt(gamma (1 - gamma))``: the std of mu given x."""
        return math.sqrt(self.gamma(t) * self.one_minus_gamma(t))

    def lam(self, t: float) -> float:
        """Half log-SNR ``lambda(t) = ln(alpha/sigma) = 0.5 ln beta_acc(t)`` (-inf at t = 0)."""
        b = self.accuracy(t)
        return -math.inf if b == 0.0 else 0.5 * math.log(b)

    def t_of_lam(self, lam: float) -> float:
        """Inverse of :meth:`lam`: ``t = ln(1 + e^(2 lambda)) / (-2 ln sigma1)``."""
        return math.log1p(math.exp(2.0 * lam)) / (-2.0 * self._log_s1)

    def step_accuracy(self, i: int, n: int) -> float:
        """Graves' per-step accuracy ``alpha_i = sigma1^(-2i/n) (1 - sigma1^(2/n))`` (Alg. 2 of BFN)."""
        if not (1 <= i <= n):
            raise ValueError(f"need 1 <= i <= n, got i={i}, n={n}")
        return self.precision(i / n) * (-math.expm1(2.0 * self._log_s1 / n))

    # --- forward SDE (diffusion time s) ---------------------------------------------------
    def f(self, s: float) -> float:
        """Drift ``f(s) = -gamma'(t)/gamma(t)`` of ``dmu = f mu ds + g dw`` (Thm 4.1), t = 1 - s."""
        t = 1.0 - s
        return 2.0 * self._log_s1 * self.one_minus_gamma(t) / self.gamma(t)

    def g2(self, s: float) -> float:
        """Squared diffusion ``g^2(s) = gamma'(t) = -2 ln(sigma1) (1 - gamma)``."""
        t = 1.0 - s
        return -2.0 * self._log_s1 * self.one_minus_gamma(t)

    def tensor(self, fn: str, t: torch.Tensor) -> torch.Tensor:
        """Vectorised ``gamma``/``sigma``/``lam``/``accuracy`` over a tensor of BFN times."""
        _check_t(t)
        t64 = t.double()
        a = 2.0 * t64 * self._log_s1
        if fn == "gamma":
            out = -torch.expm1(a)
        elif fn == "accuracy":
            out = torch.expm1(-a)
        elif fn == "sigma":
            out = torch.sqrt(-torch.expm1(a) * torch.exp(a))
        elif fn == "lam":
            out = 0.5 * torch.log(torch.expm1(-a))
        else:
            raise ValueError(f"unknown schedule function {fn!r}")
        return out.to(t.dtype)


@dataclass(frozen=True)
class DiscreteSchedule:
    """Discrete-data BFN: ``beta(t) = beta1 t^2`` on logits of K classes (paper Sec. 5.1).

    The Bayesian flow on logits is ``y | x ~ N(beta (K e_x - 1), beta K I)`` and ``theta =
    softmax(y)``. Forward SDE in diffusion time: ``f = -beta'/beta``, ``g^2 = K beta'``.
    """

    num_classes: int
    beta1: float = 3.0

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {self.num_classes!r}")
        if not (
            isinstance(self.beta1, int | float) and self.beta1 > 0 and math.isfinite(self.beta1)
        ):
            raise ValueError(f"beta1 must be a positive finite number, got {self.beta1!r}")

    def beta(self, t: float) -> float:
        """Accuracy ``beta(t) = beta1 t^2``."""
        _check_t(t)
        return self.beta1 * t * t

    def dbeta(self, t: float) -> float:
        """``beta'(t) = 2 beta1 t``."""
        _check_t(t)
        return 2.0 * self.beta1 * t

    def step_accuracy(self, i: int, n: int) -> float:
        """Graves' per-step accuracy ``alpha_i = beta1 (2i - 1)/n^2`` = beta(i/n) - beta((i-1)/n)."""
        if not (1 <= i <= n):
            raise ValueError(f"need 1 <= i <= n, got i={i}, n={n}")
        return self.beta1 * (2 * i - 1) / (n * n)

    def f(self, s: float) -> float:
        """Drift ``f(s) = -beta'(t)/beta(t) = -2/(1 - s)`` (t = 1 - s)."""
        return -2.0 / (1.0 - s)

    def g2(self, s: float) -> float:
        """Squared diffusion ``g^2(s) = K beta'(t) = 2 K beta1 (1 - s)``."""
        return 2.0 * self.num_classes * self.beta1 * (1.0 - s)
