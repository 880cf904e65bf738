"""A small BFN trainer (one config dataclass + one trainer, trl-style) and the example tasks:
continuous BFN on scikit-learn's 8x8 digits and discrete BFN on Markov-chain "text".
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bfn_solver.losses import (
    continuous_time_loss,
    discrete_continuous_time_loss,
    discrete_n_step_loss,
    n_step_loss,
)
from bfn_solver.models import eps_to_data
from bfn_solver.schedules import ContinuousSchedule, DiscreteSchedule

__all__ = ["BFNTrainer", "TrainConfig", "load_checkpoint", "load_digits_data", "save_checkpoint"]

LOSSES = ("continuous", "discrete_time")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. ``loss``: ``"continuous"`` (L_inf) or ``"discrete_time"`` (n-step, with
    ``n_steps``). ``ema``: decay of the weight average used for sampling (0 disables it)."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    loss: str = "continuous"
    n_steps: int = 100
    ema: float = 0.995
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.n_steps < 1:
            raise ValueError("n_steps must be >= 1")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema}")


class BFNTrainer:
    """Trains ``model`` on ``data`` with the BFN loss of ``schedule``'s data type.

    Continuous: ``model(mu, t)`` predicts epsilon; data ``(n, D)`` in [-1, 1].
    Discrete: ``model(theta, t)`` returns class probabilities; data ``(n, L)`` class indices.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data: torch.Tensor,
        schedule: ContinuousSchedule | DiscreteSchedule,
        config: TrainConfig,
    ) -> None:
        self.discrete = isinstance(schedule, DiscreteSchedule)
        if self.discrete:
            if data.dim() != 2 or data.dtype not in (torch.int64, torch.int32):
                raise ValueError("discrete data must be (n, L) integer class indices")
        elif data.dim() < 2 or not torch.isfinite(data).all():
            raise ValueError("continuous data must be a finite (n, ...) float tensor")
        self.model, self.schedule, self.config = model.to(config.device), schedule, config
        self.data = data.to(config.device)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.gen = torch.Generator(device=config.device).manual_seed(config.seed)
        self.losses: list[float] = []

    def loss(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if self.discrete:
            if c.loss == "continuous":
                return discrete_continuous_time_loss(model, x, self.schedule, generator=self.gen)
            return discrete_n_step_loss(model, x, self.schedule, c.n_steps, generator=self.gen)
        den = eps_to_data(model, self.schedule)
        if c.loss == "continuous":
            return continuous_time_loss(den, x, self.schedule, generator=self.gen)
        return n_step_loss(den, x, self.schedule, c.n_steps, generator=self.gen)

    def train(self, progress: Callable | None = None) -> list[float]:
        c = self.config
        steps = range(c.steps) if progress is None else progress(range(c.steps))
        lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, c.steps)
        self.model.train()
        for _ in steps:
            idx = torch.randint(
                0, self.data.shape[0], (c.batch_size,), generator=self.gen, device=self.data.device
            )
            loss = self.loss(self.model, self.data[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.opt.step()
            lr_sched.step()
            with torch.no_grad():
                d = c.ema if c.ema > 0 else 0.0
                for pe, p in zip(self.ema_model.parameters(), self.model.parameters(), strict=True):
                    pe.mul_(d).add_(p.detach(), alpha=1 - d)
            self.losses.append(float(loss.detach()))
        self.model.eval()
        return self.losses

    def denoiser(self) -> Callable:
        """The trained (EMA) model as a sampler denoiser, gradients off."""
        m = self.ema_model.eval()
        den = m if self.discrete else eps_to_data(m, self.schedule)

        @torch.no_grad()
        def f(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return den(state, t)

        f.schedule = self.schedule  # type: ignore[attr-defined]
        return f


_FORMAT = "bfn-solver-checkpoint/2"


def _schedule_meta(schedule: ContinuousSchedule | DiscreteSchedule) -> dict:
    if isinstance(schedule, ContinuousSchedule):
        return {"kind": "continuous", "sigma1": schedule.sigma1}
    if isinstance(schedule, DiscreteSchedule):
        return {"kind": "discrete", "num_classes": schedule.num_classes, "beta1": schedule.beta1}
    raise TypeError(f"need a ContinuousSchedule or DiscreteSchedule, got {type(schedule).__name__}")


def save_checkpoint(
    path, model: torch.nn.Module, schedule: ContinuousSchedule | DiscreteSchedule, **meta
) -> None:
    """Write ``model`` (a :class:`~bfn_solver.models.ContinuousMLP` or
    :class:`~bfn_solver.models.DiscreteMLP`) with the schedule it was trained for, atomically.
    :func:`load_checkpoint` rebuilds both; the schedule travels with the weights."""
    import io

    from shared import atomic_write_bytes

    cfg = getattr(model, "config", None)
    if cfg is None:
        raise TypeError("save_checkpoint needs a bfn_solver.models model (with .config)")
    doc = {
        "meta": {
            "format": _FORMAT,
            "model": type(model).__name__,
            "model_config": dict(cfg),
            "schedule": _schedule_meta(schedule),
            **meta,
        },
        "state_dict": model.state_dict(),
    }
    buf = io.BytesIO()
    torch.save(doc, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(
    path, device=None
) -> tuple[Callable, ContinuousSchedule | DiscreteSchedule, dict]:
    """Read a checkpoint of :func:`save_checkpoint` (or of 0.1.0's ``train`` command) and return
    ``(denoiser, schedule, meta)``: the denoiser (gradients off) carries its schedule as
    ``.schedule``, so samplers default to it and refuse a different one."""
    from bfn_solver.models import ContinuousMLP, DiscreteMLP

    what = "not a checkpoint written by `python -m bfn_solver train` (a dict with 'meta' and 'state_dict')"
    try:
        ck = torch.load(path, map_location=device or "cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # not a torch file, truncated, pickled objects
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read checkpoint {path}: {what} ({first[:200]})") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("meta"), dict) or "state_dict" not in ck:
        raise ValueError(f"cannot read checkpoint {path}: {what}; it holds a {type(ck).__name__}")
    meta = ck["meta"]
    try:
        if meta.get("format") == _FORMAT:
            cls = {"ContinuousMLP": ContinuousMLP, "DiscreteMLP": DiscreteMLP}[meta["model"]]
            model = cls(**meta["model_config"])
            sm = meta["schedule"]
            sc = (
                ContinuousSchedule(sm["sigma1"])
                if sm["kind"] == "continuous"
                else DiscreteSchedule(sm["num_classes"], sm["beta1"])
            )
        elif meta.get("task") == "digits":  # 0.1.0 layout
            model, sc = ContinuousMLP(64), ContinuousSchedule(meta["sigma1"])
        elif meta.get("task") == "markov":
            model = DiscreteMLP(12, meta["num_classes"], hidden=256)
            sc = DiscreteSchedule(meta["num_classes"], meta["beta1"])
        else:
            raise KeyError("task/format")
        model.load_state_dict(ck["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(
            f"cannot read checkpoint {path}: {what}; its contents do not fit ({e})"
        ) from None
    model = model.to(device or "cpu").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if isinstance(sc, ContinuousSchedule):
        den = eps_to_data(model, sc)
    else:
        den = model
        den.schedule = sc
    return den, sc, meta


def load_digits_data(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """scikit-learn's bundled 8x8 digits (1797 x 64) scaled to [-1, 1] (extra ``digits``)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits example needs scikit-learn: pip install 'bfn-solver[digits]'"
        ) from e
    x = torch.as_tensor(load_digits().data, dtype=dtype)
    return x / 8.0 - 1.0
