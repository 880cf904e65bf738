"""Plumbing shared by every sampler: argument checks, NFE counting, time grids, results."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from bfn_solver.schedules import time_grid

__all__ = ["LAST_STEPS", "NFEBudgetExceeded", "NFECounter", "SampleResult", "lin"]

LAST_STEPS = ("drop", "denoise", "state")


class NFEBudgetExceeded(RuntimeError):
    """Raised when a sampler would call the denoiser more often than its NFE budget allows."""


class NFECounter:
    """Wraps a denoiser ``f(state, t) -> prediction``: counts calls, enforces a budget, checks output.

    ``t`` is passed as a tensor of shape ``(batch,)`` holding BFN time. The output must have
    ``out_shape`` and be finite, or a ``ValueError`` says what came back.
    """

    def __init__(
        self,
        denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        budget: int | None = None,
        out_shape: Sequence[int] | None = None,
    ) -> None:
        if not callable(denoiser):
            raise TypeError(
                f"denoiser must be callable f(state, t) -> prediction, got {denoiser!r}"
            )
        self.denoiser = denoiser
        self.budget = budget
        self.out_shape = tuple(out_shape) if out_shape is not None else None
        self.calls = 0
        self.times: list[float] = []

    def __call__(self, state: torch.Tensor, t: float) -> torch.Tensor:
        if self.budget is not None and self.calls >= self.budget:
            raise NFEBudgetExceeded(
                f"denoiser call {self.calls + 1} exceeds the budget of {self.budget}"
            )
        self.calls += 1
        self.times.append(float(t))
        tt = torch.full((state.shape[0],), float(t), dtype=state.dtype, device=state.device)
        out = self.denoiser(state, tt)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"denoiser must return a tensor, got {type(out).__name__}")
        if self.out_shape is not None and tuple(out.shape) != self.out_shape:
            raise ValueError(
                f"denoiser returned shape {tuple(out.shape)}, expected {self.out_shape} "
                f"(the shape of the samples)"
            )
        if not math.isfinite(float(out.sum())):  # one reduction; NaN/inf propagate to the sum
            raise ValueError(f"denoiser returned non-finite values (NaN/inf) at t={float(t):.6g}")
        return out.to(state.dtype)


@dataclass
class SampleResult:
    """What a sampler returns: ``samples`` plus the counted ``nfe``, the BFN times the denoiser was
    called at, and optionally the state trajectory (one tensor per grid point)."""

    samples: torch.Tensor
    nfe: int
    times: list[float]
    trajectory: list[torch.Tensor] | None = None
    probs: torch.Tensor | None = None  # discrete samplers: final output distribution
    extra: dict = field(default_factory=dict)


class RunBase:
    """What continuous and discrete sampling runs share: the finishing-step rule, the noise draw
    and the optional trajectory. Subclasses set ``steps``, ``last_step``, ``shape``, ``gen``,
    ``device``, ``dtype`` and ``traj``."""

    steps: int
    last_step: str
    shape: tuple[int, ...]
    gen: torch.Generator | None
    device: torch.device
    dtype: torch.dtype
    traj: list[torch.Tensor] | None

    @classmethod
    def of(cls, args: dict, **fixed):
        """The run for a sampler's arguments (its ``locals()`` on entry; those that name a
        parameter of ``__init__`` are passed), ``fixed`` overriding."""
        params = inspect.signature(cls.__init__).parameters
        kw = {k: v for k, v in args.items() if k in params}
        kw.update(fixed)
        return cls(**kw)

    def dropping(self, k: int) -> bool:
        """True on the last loop step under ``last_step="drop"`` (its prediction is the output)."""
        return self.last_step == "drop" and k == self.steps - 1

    def noise(self) -> torch.Tensor:
        return randn(self.shape, self.gen, self.device, self.dtype)

    def push(self, state: torch.Tensor) -> None:
        if self.traj is not None:
            self.traj.append(state)


def check_common(nfe: int, eta: float, last_step: str, *, ode: bool) -> None:
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be an integer >= 1, got {nfe!r}")
    if not isinstance(eta, int | float) or not math.isfinite(eta) or not (0.0 <= eta < 1.0):
        raise ValueError(f"eta (start time offset) must lie in [0, 1), got {eta!r}")
    if ode and eta <= 0.0:
        raise ValueError("ODE solvers are singular at t = 0: use eta > 0 (e.g. 1e-3)")
    if last_step not in LAST_STEPS:
        raise ValueError(f"last_step must be one of {LAST_STEPS}, got {last_step!r}")
    if last_step == "denoise" and nfe < 2:
        raise ValueError("last_step='denoise' spends one NFE on the final denoise: need nfe >= 2")


def check_original_nfe(nfe: int) -> None:
    """The original samplers spend ``n = nfe - 1`` Bayesian updates plus the final prediction."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 2:
        raise ValueError(
            "the original BFN sampler spends nfe - 1 Bayesian updates plus one final "
            f"prediction: need nfe >= 2, got {nfe!r}"
        )


def resolve_schedule(denoiser: Callable, schedule, kind: type):
    """The schedule a run uses. A denoiser built or trained for a schedule carries it as
    ``denoiser.schedule`` (oracles, :func:`~bfn_solver.models.eps_to_data`,
    :func:`~bfn_solver.training.load_checkpoint`): with ``schedule=None`` that one is used; a
    different explicit schedule is refused, since the denoiser's predictions are only right
    under its own sigma1 / beta1."""
    own = getattr(denoiser, "schedule", None)
    own = own if isinstance(own, kind) else None
    if schedule is None:
        if own is not None:
            return own
        if kind.__name__ == "DiscreteSchedule":
            raise TypeError("discrete samplers need a DiscreteSchedule(num_classes, beta1)")
        return kind()
    if not isinstance(schedule, kind):
        raise TypeError(
            f"{'continuous' if kind.__name__ == 'ContinuousSchedule' else 'discrete'} samplers "
            f"need a {kind.__name__}, got {type(schedule).__name__}"
        )
    if own is not None and own != schedule:
        raise ValueError(
            f"schedule {schedule} does not match the denoiser's own {own} (the one it was built "
            "or trained for): pass schedule=denoiser.schedule, or None to use it"
        )
    return schedule


def make_grid(
    nfe: int, eta: float, last_step: str, nfe_per_step: int = 1
) -> tuple[list[float], int]:
    """The BFN-time grid and the number of denoiser evaluations in the main loop.

    - ``drop`` (the paper's ``last_drop``): grid of ``steps + 1`` points from eta to 1; the last loop
      evaluation returns the denoised prediction at ``t_{steps-1}`` instead of integrating.
    - ``denoise``: integrate to t = 1 with ``nfe - 1`` evaluations, then one final denoise at t = 1.
    - ``state``: integrate to t = 1 and return the state.
    """
    avail = nfe - 1 if last_step == "denoise" else nfe
    if last_step == "drop":
        # single-step order-2 solvers spend nfe_per_step per full step plus one for the final drop
        steps = max(1, (avail - 1) // nfe_per_step + 1) if nfe_per_step > 1 else avail
    else:
        if avail < nfe_per_step:
            need = nfe_per_step + (last_step == "denoise")
            raise ValueError(
                f"this sampler spends {nfe_per_step} NFE per step: with "
                f"last_step={last_step!r} it needs nfe >= {need}, got {nfe}"
            )
        steps = avail // nfe_per_step
    return time_grid(steps, eta), steps


def resolve(shape: Sequence[int] | None, x_init: torch.Tensor | None, device, dtype) -> tuple:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if x_init is not None:
        if not isinstance(x_init, torch.Tensor) or not torch.isfinite(x_init).all():
            raise ValueError("x_init must be a finite tensor")
        if shape is not None and tuple(x_init.shape) != tuple(shape):
            raise ValueError(f"x_init has shape {tuple(x_init.shape)} but shape={tuple(shape)}")
        shape = tuple(x_init.shape)
        device = x_init.device if device is None else torch.device(device)
    if shape is None:
        raise ValueError("give either shape or x_init")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (batch, ...) with positive sizes, got {shape}")
    device = torch.device("cpu") if device is None else torch.device(device)
    return shape, device


def randn(shape, generator, device, dtype) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def lin(
    a: float,
    x: torch.Tensor,
    b: float,
    y: torch.Tensor,
    c: float = 0.0,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """``a x + b y (+ c z)`` in 1-3 kernel launches (the samplers' only per-step arithmetic)."""
    if a == 1.0:
        out = torch.add(x, y, alpha=b)
    else:
        out = torch.mul(x, a)
        out.add_(y, alpha=b)
    if z is not None and c != 0.0:
        out.add_(z, alpha=c)
    return out
