"""Samplers for discrete-data BFNs (paper Sec. 5; dossier A3).

The state is the logit tensor ``y`` of shape ``(batch, length, K)``; the denoiser is called as
``denoiser(theta, t) -> p`` with ``theta = softmax(y)`` and returns per-position class
probabilities ``p`` (``x_hat = E[e_x | theta]`` at the optimum). BFN time ``t``: 0 prior, 1 data.

Updates are written in BFN time (``a`` current, ``b`` next, ``beta(t) = beta1 t^2``). The exact
PF-ODE solution is ``y_b = (b/a) y_a + K beta1 b * int_a^b (x_hat(u) - 1/K) du``; the 2nd-order
solvers expand ``x_hat`` in *time*, not in log-SNR (dossier A9.7). The reverse SDE is
``dy = beta'(t)(K x_hat - 1) dt + sqrt(K beta'(t)) dw``.

Output: ``samples`` are class indices ``(batch, length)``: the argmax (``decode="argmax"``, the
paper's mode-seeking decode) or a draw (``decode="sample"``) of the final output distribution
(``last_step`` ``"drop"`` or ``"denoise"``), or of ``softmax(y)`` for ``last_step="state"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from bfn_solver.ops import categorical_one_hot, class_softmax
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
from bfn_solver.schedules import DiscreteSchedule

__all__ = [
    "sample_discrete_bfn_original",
    "sample_discrete_bfn_solver1",
    "sample_discrete_bfn_solver2",
    "sample_discrete_bfn_solver2_singlestep",
    "sample_discrete_ode_euler",
    "sample_discrete_sde_bfn_solver1",
    "sample_discrete_sde_bfn_solver2",
    "sample_discrete_sde_euler",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DECODES = ("argmax", "sample")


def _softmax(y: torch.Tensor) -> torch.Tensor:
    """The network input ``theta = softmax(y)`` (fast small-K path on CPU, :mod:`bfn_solver.ops`)."""
    return class_softmax(y)


class _Run(RunBase):
    def __init__(
        self,
        denoiser,
        shape,
        nfe,
        schedule,
        eta,
        last_step,
        decode,
        x_init,
        generator,
        device,
        dtype,
        return_trajectory,
        *,
        ode: bool,
        nfe_per_step: int = 1,
    ) -> None:
        check_common(nfe, eta, last_step, ode=ode)
        schedule = resolve_schedule(denoiser, schedule, DiscreteSchedule)
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        self.schedule, self.K = schedule, schedule.num_classes
        self.shape, self.device = resolve(shape, x_init, device, dtype)
        if len(self.shape) != 3 or self.shape[-1] != self.K:
            raise ValueError(
                f"discrete shape must be (batch, length, K={self.K}), got {self.shape}"
            )
        self.dtype, self.last_step, self.decode, self.gen = dtype, last_step, decode, generator
        self.times, self.steps = make_grid(nfe, eta, last_step, nfe_per_step)
        self.model = NFECounter(denoiser, nfe, self.shape)
        if x_init is not None:
            y = x_init.to(device=self.device, dtype=dtype)
        elif eta == 0.0:
            y = torch.zeros(self.shape, device=self.device, dtype=dtype)
        else:  # "zero_mean_and_std": y ~ N(0, K beta(eta) I)
            y = math.sqrt(self.K * schedule.beta(eta)) * randn(
                self.shape, generator, self.device, dtype
            )
        self.y0 = y
        self.traj = [y] if return_trajectory else None

    def x0(self, y: torch.Tensor, t: float) -> torch.Tensor:
        return self.model(_softmax(y), t)

    def done(self, y: torch.Tensor, p_last: torch.Tensor | None = None) -> SampleResult:
        if p_last is not None:
            p = p_last
        elif self.last_step == "denoise":
            p = self.x0(y, self.times[-1])
        else:
            p = _softmax(y)
        if self.decode == "argmax":
            out = p.argmax(-1)
        else:
            out = categorical_one_hot(p, self.gen).argmax(-1)
        return SampleResult(
            out, self.model.calls, self.model.times, self.traj, probs=p, extra={"logits": y}
        )


def _kw(fn):
    fn.__doc__ = (fn.__doc__ or "") + (
        "\n\n    Keywords: ``eta`` (start, BFN time), ``last_step`` (``drop``/``denoise``/``state``), "
        "``decode`` (``argmax``/``sample``), ``x_init`` (initial logits), ``generator``, ``device``, "
        "``dtype``, ``return_trajectory``.\n"
    )
    return fn


def _solver1(y, x, a, b, s: DiscreteSchedule):
    """Discrete BFN-Solver1 step: ``y_b = (b/a) y + beta1 b (b - a)(K x_hat - 1)``."""
    c = s.beta1 * b * (b - a)
    return lin(b / a, y, c * s.num_classes, x).sub_(c)


def _sde_step(y, e, db, K: int, z):
    """``y + db (K e - 1) + sqrt(K db) z`` (3 kernels; ``db`` = the accuracy added this step)."""
    return torch.add(y, e, alpha=db * K).add_(z, alpha=math.sqrt(K * db)).sub_(db)


@_kw
def sample_discrete_bfn_original(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: DiscreteSchedule,
    *,
    categorical: bool = True,
    decode: str = "argmax",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
) -> SampleResult:
    """Original discrete BFN sampler (Graves et al. 2023, Alg. 9; dossier A3.2).

    ``n = nfe - 1`` steps at ``t = (i-1)/n``: draw ``k ~ Cat(x_hat)`` (``categorical=True``; the mean
    ``x_hat`` otherwise), ``alpha = beta1 (2i - 1)/n^2``, ``y += alpha (K e_k - 1) + sqrt(alpha K) z``;
    then ``x_hat(theta, 1)``. NFE = n + 1. With ``categorical=False`` it equals SDE-BFN-Solver1 on the
    grid ``i/n``; the paper calls it an approximate SDE-solver1.
    """
    check_original_nfe(nfe)
    run = _Run.of(locals(), eta=0.0, last_step="denoise", ode=False)
    schedule = run.schedule
    n, K, y = run.steps, run.K, run.y0
    for i in range(1, n + 1):
        p = run.x0(y, (i - 1) / n)
        alpha = schedule.step_accuracy(i, n)
        # y += alpha (K e - 1) + sqrt(alpha K) z, with e a one-hot draw from p (or p itself)
        e = categorical_one_hot(p, generator) if categorical else p
        y = _sde_step(y, e, alpha, K, run.noise())
        run.push(y)
    return run.done(y)


@_kw
def sample_discrete_bfn_solver1(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: DiscreteSchedule,
    *,
    eta: float = 1e-3,
    last_step: str = "drop",
    decode: str = "argmax",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
) -> SampleResult:
    """Discrete BFN-Solver1 (ODE, first order): ``y_b = (b/a) y_a + beta1 b (b-a)(K x_hat - 1)``."""
    run = _Run.of(locals(), ode=True)
    schedule = run.schedule
    y = run.y0
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(y, a)
        if run.dropping(k):
            return run.done(y, x)
        y = _solver1(y, x, a, b, schedule)
        run.push(y)
    return run.done(y)


@_kw
def sample_discrete_bfn_solver2(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: DiscreteSchedule,
    *,
    eta: float = 1e-3,
    last_step: str = "drop",
    decode: str = "argmax",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
) -> SampleResult:
    """Discrete BFN-Solver2, multistep: Solver1 + ``K beta1 b (b-a)^2/2 * D``, with the backward
    difference ``D = (x_a - x_prev)/(a - a_prev)``; the first step is Solver1."""
    run = _Run.of(locals(), ode=True)
    schedule = run.schedule
    y, x_prev, a_prev = run.y0, None, None
    K, b1 = schedule.num_classes, schedule.beta1
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(y, a)
        if run.dropping(k):
            return run.done(y, x)
        c = b1 * b * (b - a)  # Solver1: (b/a) y + c (K x - 1); + w (x - x_prev) from step 2 on
        w = 0.0 if x_prev is None else K * b1 * b * (b - a) ** 2 / 2 / (a - a_prev)
        y_next = lin(b / a, y, c * K + w, x, -w, x_prev).sub_(c)
        y, x_prev, a_prev = y_next, x, a
        run.push(y)
    return run.done(y)


@_kw
def sample_discrete_bfn_solver2_singlestep(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: DiscreteSchedule,
    *,
    eta: float = 1e-3,
    last_step: str = "drop",
    decode: str = "argmax",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
) -> SampleResult:
    """Discrete BFN-Solver2, single-step (midpoint): ``m = (a+b)/2``, ``y_m`` by Solver1, then
    Solver1 + ``K beta1 b (b-a)^2/2 * (x_m - x_a)/(m - a)``. Two NFE per step.

    ``last_step="drop"`` (default) is the official ``last_drop``: ``N = nfe // 2`` steps, the
    last one spends both its calls and returns x_hat at the midpoint of the last interval
    (NFE = 2N; an odd budget leaves one call unused). ``"drop_first"`` (the 0.1.0 behaviour)
    returns x_hat at ``t_{N-1}`` after ``N - 1`` full steps (NFE = 2N - 1); ``"denoise"`` and
    ``"state"`` integrate to t = 1."""
    if last_step == "drop":
        if isinstance(nfe, int) and not isinstance(nfe, bool) and nfe < 2:
            raise ValueError(
                "the single-step solver spends 2 NFE per step (last_step='drop' returns the "
                f"midpoint prediction of the last step): need nfe >= 2, got {nfe}"
            )
        run = _Run.of(locals(), ode=True, nfe_per_step=2, last_step="state")
    elif last_step == "drop_first":
        run = _Run.of(locals(), ode=True, nfe_per_step=2, last_step="drop")
    else:
        run = _Run.of(locals(), ode=True, nfe_per_step=2)
    schedule = run.schedule
    y = run.y0
    K, b1 = schedule.num_classes, schedule.beta1
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(y, a)
        if run.dropping(k):
            return run.done(y, x)
        m = 0.5 * (a + b)
        x_m = run.x0(_solver1(y, x, a, m, schedule), m)
        if last_step == "drop" and k == run.steps - 1:
            return run.done(y, x_m)
        w = K * b1 * b * (b - a) ** 2 / 2 / (m - a)
        y = _solver1(y, x, a, b, schedule).add_(x_m, alpha=w).sub_(x, alpha=w)
        run.push(y)
    return run.done(y)


@_kw
def sample_discrete_sde_bfn_solver1(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: DiscreteSchedule,
    *,
    eta: float = 1e-3,
    categorical: bool = False,
    last_step: str = "drop",
    decode: str = "argmax",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
) -> SampleResult:
    """Discrete SDE-BFN-Solver1: ``y_b = y + (beta_b - beta_a)(K x_hat - 1) + sqrt(K(beta_b - beta_a)) z``.

    ``categorical=True`` (the official ``cate_samp``) replaces x_hat by a one-hot draw: on the grid
    ``i/n`` from eta = 0 with ``last_step="denoise"`` this is exactly the original sampler.
    """
    run = _Run.of(locals(), ode=False)
    schedule = run.schedule
    y, K = run.y0, schedule.num_classes
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(y, a)
        if run.dropping(k):
            return run.done(y, x)
        db = schedule.beta(b) - schedule.beta(a)
        e = categorical_one_hot(x, generator) if categorical else x  # official cate_samp
        y = _sde_step(y, e, db, K, run.noise())
        run.push(y)
    return run.done(y)


@_kw
def sample_discrete_sde_bfn_solver2(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: DiscreteSchedule,
    *,
    eta: float = 1e-3,
    last_step: str = "drop",
    decode: str = "argmax",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
) -> SampleResult:
    """Discrete SDE-BFN-Solver2, multistep: SDE-Solver1 + ``(1/3) K beta1 (b-a)^2 (a + 2b) D`` with
    ``D = (x_a - x_prev)/(a - a_prev)`` (= ``2 K beta1 D int_a^b u (u - a) du``); noise first order."""
    run = _Run.of(locals(), ode=False)
    schedule = run.schedule
    y, x_prev, a_prev = run.y0, None, None
    K, b1 = schedule.num_classes, schedule.beta1
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(y, a)
        if run.dropping(k):
            return run.done(y, x)
        db = schedule.beta(b) - schedule.beta(a)
        w = 0.0 if x_prev is None else K * b1 * (b - a) ** 2 * (a + 2 * b) / 3 / (a - a_prev)
        y = lin(1.0, y, db * K + w, x, -w, x_prev).add_(run.noise(), alpha=math.sqrt(K * db))
        y.sub_(db)
        x_prev, a_prev = x, a
        run.push(y)
    return run.done(y)


@_kw
def sample_discrete_ode_euler(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: DiscreteSchedule,
    *,
    eta: float = 1e-3,
    last_step: str = "drop",
    decode: str = "argmax",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
) -> SampleResult:
    """Euler on the PF-ODE ``dy/dt = y/t + K beta1 t (x_hat - 1/K)`` (the official ``ode_euler``)."""
    run = _Run.of(locals(), ode=True)
    schedule = run.schedule
    y, K, b1 = run.y0, schedule.num_classes, schedule.beta1
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(y, a)
        if run.dropping(k):
            return run.done(y, x)
        y = y + (b - a) * (y / a + b1 * a * (K * x - 1.0))
        run.push(y)
    return run.done(y)


@_kw
def sample_discrete_sde_euler(
    denoiser: Denoiser,
    shape: Sequence[int] | None,
    nfe: int,
    schedule: DiscreteSchedule,
    *,
    eta: float = 1e-3,
    last_step: str = "drop",
    decode: str = "argmax",
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
) -> SampleResult:
    """Euler-Maruyama on the reverse SDE ``dy = beta'(t)(K x_hat - 1) dt + sqrt(K beta'(t)) dw``.

    The official ``sde_euler_update`` returns the network logits instead of the new state (dossier
    A9.5); this is the corrected update.
    """
    run = _Run.of(locals(), ode=False)
    schedule = run.schedule
    y, K = run.y0, schedule.num_classes
    for k in range(run.steps):
        a, b = run.times[k], run.times[k + 1]
        x = run.x0(y, a)
        if run.dropping(k):
            return run.done(y, x)
        db = schedule.dbeta(a)
        y = y + (b - a) * db * (K * x - 1.0) + math.sqrt(K * db * (b - a)) * run.noise()
        run.push(y)
    return run.done(y)
