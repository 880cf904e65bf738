"""Samplers for continuous-data BFNs (paper Sec. 4; Algorithms 1-3 of its appendix).

Every sampler is a short function ``(denoiser, shape, nfe, schedule, ...) -> SampleResult`` over a
data-prediction denoiser ``denoiser(mu, t) -> x_hat`` (``t``: BFN time, shape ``(batch,)``). Wrap an
epsilon-predicting network with :func:`bfn_solver.models.eps_to_data`.

Continuous BFN is the VP diffusion ``mu = alpha_t x + sigma_t eps`` with ``alpha_t = gamma(t)`` and
``sigma_t = sqrt(gamma (1-gamma))`` (dossier A2.3). Coefficients are written through the accumulated
accuracy ``beta_acc = sigma1^(-2t) - 1`` and precision ``rho = 1 + beta_acc`` so that they stay
finite at t = 0: ``alpha = beta_acc/rho``, ``sigma = sqrt(beta_acc)/rho``,
``exp(-h) = sqrt(beta_acc(s)/beta_acc(t))`` with ``h = lambda_t - lambda_s``.

Common keywords: ``eta`` (start offset, BFN time), ``clip`` (``(lo, hi)`` bounds for x_hat, or None;
epsilon is recomputed from the clipped x_hat as in the official code), ``last_step`` (``"drop"``
= the paper's ``last_drop``, ``"denoise"``, ``"state"``), ``x_init``, ``generator``, ``device``,
``dtype``, ``return_trajectory``, ``grid`` (``"time"``: uniform in BFN time as in the official
code; ``"lambda"``: uniform in half log-SNR, DPM-Solver's ``logSNR`` skip type).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from bfn_solver.samplers._common import (
    NFECounter,
    RunBase,
    SampleResult,
    check_common,
    check_original_nfe,
    lin,
    make_grid,
    randn,
    resolve,
    resolve_schedule,
)
from bfn_solver.schedules import ContinuousSchedule

__all__ = [
    "sample_bfn_original",
    "sample_bfn_solver1",
    "sample_bfn_solver_pp1",
    "sample_bfn_solver_pp2",
    "sample_bfn_solver_pp3",
    "sample_sde_bfn_solver_pp1",
    "sample_sde_bfn_solver_pp2",
    "sample_sde_euler",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Clip = tuple[float, float] | None
GRIDS = ("time", "lambda")


class _Run(RunBase):
    """State of one continuous sampling run: grid, counted denoiser, trajectory, finishing."""

    def __init__(
        self,
        denoiser,
        shape,
        nfe,
        schedule,
        eta,
        clip,
        last_step,
        x_init,
        generator,
        device,
        dtype,
        return_trajectory,
        *,
        ode: bool,
        nfe_per_step: int = 1,
        grid: str = "time",
    ) -> None:
        check_common(nfe, eta, last_step, ode=ode)
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
        if grid == "lambda" and eta <= 0.0:
            raise ValueError("grid='lambda' needs eta > 0 (lambda is -inf at t = 0)")
        self.schedule = resolve_schedule(denoiser, schedule, ContinuousSchedule)
        if clip is not None and (len(clip) != 2 or not clip[0] < clip[1]):
            raise ValueError(f"clip must be None or (lo, hi) with lo < hi, got {clip!r}")
        self.shape, self.device = resolve(shape, x_init, device, dtype)
        self.dtype, self.clip, self.last_step, self.gen = dtype, clip, last_step, generator
        self.times, self.steps = make_grid(nfe, eta, last_step, nfe_per_step)
        if grid == "lambda":  # uniform in half log-SNR (DPM-Solver's "logSNR" skip type)
            sc, lo = self.schedule, self.schedule.lam(eta)
            hi = sc.lam(1.0)
            self.times = (
                [eta]
                + [sc.t_of_lam(lo + (hi - lo) * k / self.steps) for k in range(1, self.steps)]
                + [1.0]
            )
        self.model = NFECounter(denoiser, nfe, self.shape)
        if x_init is not None:
            mu = x_init.to(device=self.device, dtype=dtype)
        elif eta == 0.0:
            mu = torch.zeros(self.shape, device=self.device, dtype=dtype)  # prior: mu = 0 exactly
        else:  # "zero_mean_and_std": mu ~ N(0, gamma(eta)(1 - gamma(eta)) I)
            mu = self.schedule.sigma(eta) * randn(self.shape, generator, self.device, dtype)
        self.mu0 = mu
        self.traj = [mu] if return_trajectory else None

    def x0(self, mu: torch.Tensor, t: float) -> torch.Tensor:
        x = self.model(mu, t)
        return x.clamp(self.clip[0], self.clip[1]) if self.clip is not None else x

    def done(self, mu: torch.Tensor, x_last: torch.Tensor | None = None) -> SampleResult:
        if x_last is not None:
            out = x_last
        elif self.last_step == "denoise":
            out = self.x0(mu, self.times[-1])
        else:
            out = mu
        return SampleResult(out, self.model.calls, self.model.times, self.traj)

    # float64 coefficients between BFN times a < b
    def coefs(self, a: float, b: float) -> dict[str, float]:
        s = self.schedule
        ba, bb, ra, rb = s.accuracy(a), s.accuracy(b), s.precision(a), s.precision(b)
        c = {
            "beta_a": ba,
            "beta_b": bb,
            "rho_a": ra,
            "rho_b": rb,
            "alpha_a": ba / ra,
            "alpha_b": bb / rb,
            "sigma_a": math.sqrt(ba) / ra,
            "sigma_b": math.sqrt(bb) / rb,
        }
        c["h"] = 0.5 * math.log(bb / ba) if ba > 0 else math.inf
        return c


def sample_bfn_original(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: ContinuousSchedule | None = None,
    *,
    clip: Clip = (-1.0, 1.0),
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
) -> SampleResult:
    """The original continuous BFN sampler (Graves et al. 2023, Alg. 3; dossier A2.2).

    ``n = nfe - 1`` Bayesian updates on the grid ``t_i = (i-1)/n`` with accuracies
    ``alpha_i = sigma1^(-2i/n)(1 - sigma1^(2/n))``, then the prediction ``x_hat(mu, 1)``: NFE = n + 1.
    """
    check_original_nfe(nfe)
    run = _Run.of(locals(), eta=0.0, last_step="denoise", ode=False)
    n = run.steps
    mu, rho = run.mu0, 1.0
    for i in range(1, n + 1):
        x = run.x0(mu, (i - 1) / n)
        alpha = run.schedule.step_accuracy(i, n)
        # y = x_hat + z / sqrt(alpha) ~ N(x_hat, 1/alpha); mu <- (rho mu + alpha y)/(rho + alpha)
        new = rho + alpha
        mu = lin(rho / new, mu, alpha / new, x, math.sqrt(alpha) / new, run.noise())
        rho = new
        run.push(mu)
    return run.done(mu)


def sample_bfn_solver1(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: ContinuousSchedule | None = None,
    *,
    eta: float = 1e-3,
    clip: Clip = (-1.0, 1.0),
    last_step: str = "drop",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
    grid: str = "time",
) -> SampleResult:
    """BFN-Solver1 in noise-prediction form (Alg. 1; = DDIM / DPM-Solver-1).

    ``mu_t = (alpha_t/alpha_s) mu_s - sigma_t (e^h - 1) eps_hat`` with eps_hat recomputed from the
    clipped x_hat. Algebraically identical to :func:`sample_bfn_solver_pp1`.
    """
    run = _Run.of(locals(), ode=True)
    mu = run.mu0
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(mu, a)
        if run.dropping(k):
            return run.done(mu, x)
        c = run.coefs(a, b)
        eps = lin(1.0 / c["sigma_a"], mu, -c["alpha_a"] / c["sigma_a"], x)
        mu = lin(c["alpha_b"] / c["alpha_a"], mu, -c["sigma_b"] * math.expm1(c["h"]), eps)
        run.push(mu)
    return run.done(mu)


def sample_bfn_solver_pp1(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: ContinuousSchedule | None = None,
    *,
    eta: float = 1e-3,
    clip: Clip = (-1.0, 1.0),
    last_step: str = "drop",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
    grid: str = "time",
) -> SampleResult:
    """BFN-Solver++1, data-prediction form (Alg. 2, first order; = DPM-Solver++1).

    ``mu_t = (sigma_t/sigma_s) mu_s + alpha_t (1 - e^(-h)) x_hat``.
    """
    run = _Run.of(locals(), ode=True)
    mu = run.mu0
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(mu, a)
        if run.dropping(k):
            return run.done(mu, x)
        c = run.coefs(a, b)
        mu = lin(c["sigma_b"] / c["sigma_a"], mu, -c["alpha_b"] * math.expm1(-c["h"]), x)
        run.push(mu)
    return run.done(mu)


def sample_bfn_solver_pp2(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: ContinuousSchedule | None = None,
    *,
    eta: float = 1e-3,
    clip: Clip = (-1.0, 1.0),
    last_step: str = "drop",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
    grid: str = "time",
) -> SampleResult:
    """BFN-Solver++2, multistep (Alg. 2; = DPM-Solver++(2M), expansion in lambda).

    ``r = h_prev/h``, ``D = (1 + 1/(2r)) x_k - x_{k-1}/(2r)``,
    ``mu_t = (sigma_t/sigma_s) mu_s + alpha_t (1 - e^(-h)) D``; the first step uses ``D = x_0``.
    """
    run = _Run.of(locals(), ode=True)
    mu, x_prev, h_prev = run.mu0, None, None
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(mu, a)
        if run.dropping(k):
            return run.done(mu, x)
        c = run.coefs(a, b)
        w = -c["alpha_b"] * math.expm1(-c["h"])
        if x_prev is None:
            mu = lin(c["sigma_b"] / c["sigma_a"], mu, w, x)
        else:  # D = (1 + 1/(2r)) x_k - x_{k-1}/(2r)
            r = h_prev / c["h"]
            mu = lin(c["sigma_b"] / c["sigma_a"], mu, w * (1 + 0.5 / r), x, -w * 0.5 / r, x_prev)
        x_prev, h_prev = x, c["h"]
        run.push(mu)
    return run.done(mu)


def sample_bfn_solver_pp3(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: ContinuousSchedule | None = None,
    *,
    eta: float = 1e-3,
    clip: Clip = (-1.0, 1.0),
    last_step: str = "drop",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
    grid: str = "lambda",
    start: str = "midpoint",
) -> SampleResult:
    """BFN-Solver++3, multistep (beyond the paper; = DPM-Solver++(3M), expansion in lambda).

    With ``h = lambda_t - lambda_k``, ``r0 = h_{k-1}/h``, ``r1 = h_{k-2}/h``,
    ``D1_0 = (x_k - x_{k-1})/r0``, ``D1_1 = (x_{k-1} - x_{k-2})/r1``,
    ``D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1)``, ``D2 = (D1_0 - D1_1)/(r0 + r1)``:
    ``mu_t = (sigma_t/sigma_s) mu_s + alpha_t (1 - e^(-h)) x_k + alpha_t ((e^(-h) - 1)/h + 1) D1
    + alpha_t (1 - 2 (e^(-h) - 1 + h)/h^2) D2``: the exact integral of the quadratic through the
    last three predictions (``D1 ~ h x'``, ``D2 ~ h^2 x''/2``; ``int_0^h e^(u-h) u^2/2 du =
    h^2/2 - h + 1 - e^(-h)``). The D2 coefficient is twice the ``(e^(-h) - 1 + h)/h^2 - 1/2``
    often quoted for DPM-Solver++(3M) with this D2, which is exact only to second order (a
    quadratic ``x_hat(lambda)`` is then integrated with an O(h^3) error; checked in the tests).
    The second step is ++2 (the arithmetic of
    :func:`sample_bfn_solver_pp2`). ``start`` chooses the first step: ``"euler"`` is ++1, as in
    DPM-Solver++(3M), whose one first-order step leaves a global error O(h^2) (observed order
    2 on the exact Gaussian flow); ``"midpoint"`` (default) is the second-order single-step
    midpoint in lambda (``mu_t = (sigma_t/sigma_s) mu_s + alpha_t (1 - e^(-h)) x_hat(mid)``),
    one more NFE, after which the observed order is 3 (a budget too small to integrate a step
    with it falls back to the ++1 start). The default grid is uniform in lambda:
    the official uniform-time grid's first step from eta = 1e-3 spans ~2.3 in lambda and caps
    any solver's observed order there.
    """
    if start not in ("midpoint", "euler"):
        raise ValueError(f"start must be 'midpoint' or 'euler', got {start!r}")
    # the midpoint start spends one more call; a budget too small for it to integrate a step
    # (drop: nfe < 3, state: nfe < 2, denoise: nfe < 3) uses the ++1 start instead
    small = {"drop": 3, "state": 2, "denoise": 3}.get(last_step, 0)
    extra = 1 if start == "midpoint" and isinstance(nfe, int) and nfe >= small else 0
    run = _Run.of(locals(), nfe=nfe - extra, ode=True) if extra else _Run.of(locals(), ode=True)
    run.model.budget = nfe  # the midpoint start spends one call more than the grid's steps
    sc = run.schedule
    mu, xs, hs = run.mu0, [], []
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(mu, a)
        if run.dropping(k):
            return run.done(mu, x)
        c = run.coefs(a, b)
        h = c["h"]
        em = math.expm1(-h)  # e^(-h) - 1
        w = -c["alpha_b"] * em
        ratio = c["sigma_b"] / c["sigma_a"]
        if not xs and extra:
            m = sc.t_of_lam(0.5 * (sc.lam(a) + sc.lam(b)))
            cm = run.coefs(a, m)
            u = lin(cm["sigma_b"] / cm["sigma_a"], mu, -cm["alpha_b"] * math.expm1(-cm["h"]), x)
            mu = lin(ratio, mu, w, run.x0(u, m))
        elif not xs:
            mu = lin(ratio, mu, w, x)
        elif len(xs) == 1 or not all(math.isfinite(v) for v in hs[-2:]):
            r = hs[-1] / h  # the ++2 step, same arithmetic as sample_bfn_solver_pp2
            mu = lin(ratio, mu, w * (1 + 0.5 / r), x, -w * 0.5 / r, xs[-1])
        else:
            r0, r1 = hs[-1] / h, hs[-2] / h
            d1_0 = (x - xs[-1]) / r0
            d1_1 = (xs[-1] - xs[-2]) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            c1 = c["alpha_b"] * (em / h + 1.0)
            c2 = c["alpha_b"] * (1.0 - 2.0 * (em + h) / h**2)
            mu = lin(ratio, mu, w, x, c1, d1).add_(d2, alpha=c2)
        xs = [*xs, x][-2:]
        hs = [*hs, h][-2:]
        run.push(mu)
    return run.done(mu)


def sample_sde_bfn_solver_pp1(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: ContinuousSchedule | None = None,
    *,
    eta: float = 1e-3,
    clip: Clip = (-1.0, 1.0),
    last_step: str = "drop",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
    grid: str = "time",
) -> SampleResult:
    """SDE-BFN-Solver++1 (Alg. 3, first order; = SDE-DPM-Solver++1).

    ``mu_t = (rho_s/rho_t) mu_s + ((beta_t - beta_s)/rho_t) x_hat + (sqrt(beta_t - beta_s)/rho_t) z``,
    i.e. ``(sigma_t/sigma_s) e^(-h) mu + alpha_t (1 - e^(-2h)) x_hat + sigma_t sqrt(1 - e^(-2h)) z``.
    On the grid ``i/n`` from eta = 0 with ``last_step="denoise"`` it *is* the original sampler
    (Prop. 4.2).
    """
    run = _Run.of(locals(), ode=False)
    mu = run.mu0
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(mu, a)
        if run.dropping(k):
            return run.done(mu, x)
        c = run.coefs(a, b)
        db = c["beta_b"] - c["beta_a"]
        mu = lin(
            c["rho_a"] / c["rho_b"], mu, db / c["rho_b"], x, math.sqrt(db) / c["rho_b"], run.noise()
        )
        run.push(mu)
    return run.done(mu)


def sample_sde_bfn_solver_pp2(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: ContinuousSchedule | None = None,
    *,
    eta: float = 1e-3,
    clip: Clip = (-1.0, 1.0),
    last_step: str = "drop",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
    grid: str = "time",
) -> SampleResult:
    """SDE-BFN-Solver++2, multistep (Alg. 3; = SDE-DPM-Solver++(2M), midpoint form).

    SDE-BFN-Solver++1 plus ``0.5 alpha_t (1 - e^(-2h)) (x_k - x_{k-1}) / r``; the noise term stays
    first order (dossier A9.12). The first step drops the correction.
    """
    run = _Run.of(locals(), ode=False)
    mu, x_prev, h_prev = run.mu0, None, None
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(mu, a)
        if run.dropping(k):
            return run.done(mu, x)
        c = run.coefs(a, b)
        db = c["beta_b"] - c["beta_a"]
        w, wz = db / c["rho_b"], math.sqrt(db) / c["rho_b"]
        if x_prev is not None and math.isfinite(h_prev):  # + 0.5 w (x_k - x_{k-1}) / r
            q = 0.5 * w * c["h"] / h_prev
            mu = lin(c["rho_a"] / c["rho_b"], mu, w + q, x, -q, x_prev)
        else:
            mu = lin(c["rho_a"] / c["rho_b"], mu, w, x)
        mu.add_(run.noise(), alpha=wz)
        x_prev, h_prev = x, c["h"]
        run.push(mu)
    return run.done(mu)


def sample_sde_euler(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: ContinuousSchedule | None = None,
    *,
    eta: float = 1e-3,
    clip: Clip = (-1.0, 1.0),
    last_step: str = "drop",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
    grid: str = "time",
) -> SampleResult:
    """Euler-Maruyama on the reverse SDE of Thm 4.1 (the official ``sde_euler``, a reference).

    ``mu <- mu - (f mu + g^2 eps_hat/sigma) ds + g sqrt(ds) z`` in diffusion time.
    """
    run = _Run.of(locals(), ode=True)
    s_ = run.schedule
    mu = run.mu0
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(mu, a)
        if run.dropping(k):
            return run.done(mu, x)
        sig, alp = s_.sigma(a), s_.gamma(a)
        eps = (mu - alp * x) / sig
        ds = b - a
        f, g2 = s_.f(1.0 - a), s_.g2(1.0 - a)
        mu = mu - (f * mu + (g2 / sig) * eps) * ds + math.sqrt(g2 * ds) * run.noise()
        run.push(mu)
    return run.done(mu)
