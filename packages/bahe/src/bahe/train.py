"""Training and evaluation of the CTR models (BCE, AdamW), single-process or data-parallel.

With ``torch.distributed`` initialised (torchrun, or ``shared.spawn`` in tests) the model is
wrapped in ``DistributedDataParallel`` (gloo on CPU, nccl with CUDA): every rank draws the same
shuffled global batch and takes its contiguous ``1/world`` slice, so ``world`` ranks with global
batch ``B`` follow exactly the trajectory of one process with batch ``B`` (gradients are
averaged). Checkpoints hold the trainable state only and are written atomically.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .data import CTRData
from .metrics import auc, logloss

__all__ = [
    "TrainConfig",
    "TrainResult",
    "batches",
    "evaluate",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "train",
    "train_step",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``steps`` (if set) overrides ``epochs``."""

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    eval_batch_size: int = 256
    device: str = "cpu"
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 or None, got {self.steps}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError("grad_clip must be > 0 or None")


@dataclass
class TrainResult:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batches(
    n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True
) -> Iterator[np.ndarray]:
    """Global batches of row indices (full batches only), the same on every rank."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    for s in range(0, n - batch_size + 1, batch_size):
        yield order[s : s + batch_size]


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    grad_clip: float | None = 1.0,
) -> float:
    """One optimisation step (forward, BCE, backward, clip, AdamW); returns the loss."""
    model.train()
    opt.zero_grad(set_to_none=True)
    logits = model(batch)
    loss = _bce(logits, batch["labels"].to(logits.device))
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], grad_clip
        )
    opt.step()
    return float(loss.detach())


def train(
    model: nn.Module,
    data: CTRData,
    cfg: TrainConfig | None = None,
    *,
    eval_data: CTRData | None = None,
    show_progress: bool = False,
) -> TrainResult:
    """Train ``model`` (``BAHECTR`` or ``NaiveCTR``) on ``data``; DDP when distributed is on."""
    from shared import progress

    cfg = cfg or TrainConfig()
    rank, world = _world()
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size {cfg.batch_size} must be divisible by the world size {world} "
            "(each rank takes an equal slice of every global batch)"
        )
    if len(data) < cfg.batch_size:
        raise ValueError(f"{len(data)} training rows are fewer than one batch ({cfg.batch_size})")
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    core = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = make_optimizer(model, cfg)
    per_epoch = len(data) // cfg.batch_size
    total = cfg.steps if cfg.steps is not None else per_epoch * cfg.epochs
    res = TrainResult(0, 0.0)
    bar = progress(
        total=total,
        desc=f"train {getattr(core, 'kind', 'model')}",
        disable=(not show_progress or rank != 0) or None,
    )
    t0 = time.perf_counter()
    epoch = 0
    while res.steps < total:
        for gb in batches(len(data), cfg.batch_size, seed=cfg.seed, epoch=epoch):
            local = np.array_split(gb, world)[rank]
            batch = core.featurize(data, local)
            loss = train_step(model, opt, batch, cfg.grad_clip)
            res.losses.append(loss)
            res.steps += 1
            bar.update(1)
            if res.steps % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(res.losses[-10:]):.4f}")
            if res.steps >= total:
                break
        epoch += 1
    bar.close()
    res.seconds = time.perf_counter() - t0
    if eval_data is not None:
        res.metrics = evaluate(core, eval_data, cfg.eval_batch_size)
    return res


@torch.no_grad()
def predict(model: nn.Module, data: CTRData, batch_size: int = 256) -> np.ndarray:
    """Click probabilities for every row of ``data`` (eval mode, in row order)."""
    model.eval()
    out = []
    for s in range(0, len(data), batch_size):
        idx = np.arange(s, min(len(data), s + batch_size))
        out.append(torch.sigmoid(model(model.featurize(data, idx))).float().cpu().numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def evaluate(model: nn.Module, data: CTRData, batch_size: int = 256) -> dict[str, Any]:
    """AUC, logloss, rows and positive rate of ``model`` on ``data``."""
    p = predict(model, data, batch_size)
    return {
        "auc": auc(data.labels, p),
        "logloss": logloss(data.labels, p),
        "rows": len(data),
        "positive_rate": float(data.labels.mean()) if len(data) else float("nan"),
    }


# ---------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "bahe-checkpoint-v1"


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the model's state (trainable parts and the LM's upper layers) atomically."""
    from shared import atomic_write_bytes

    core = getattr(model, "module", model)
    cfg = getattr(core, "config", None)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": getattr(core, "kind", type(core).__name__),
        "config": asdict(cfg) if cfg is not None else None,
        "state": {k: v.detach().cpu() for k, v in core.state_dict().items()},
        "meta": meta or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model``; returns its meta.

    Raises ``ValueError`` on a file that is not a bahe checkpoint, is truncated, or was written by
    a differently shaped model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types on a damaged file
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a bahe checkpoint")
    core = getattr(model, "module", model)
    kind = getattr(core, "kind", type(core).__name__)
    if payload["kind"] != kind:
        raise ValueError(f"{path} holds a {payload['kind']} model, not {kind}")
    try:
        core.load_state_dict(payload["state"])
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit this model: {e}") from e
    return payload.get("meta", {})
