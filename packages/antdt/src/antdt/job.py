"""A complete training job on the embedded synthetic regression task (demo, bench, tests).

Run under torchrun (``python -m antdt run ... -- -m antdt.job --config job.json``) or in
:func:`shared.spawn` processes via :func:`run_job`. The master address comes from
``$ANTDT_MASTER_ADDR``. Rank 0 writes a JSON result: final parameters (as ``float.hex`` strings,
so bit-identity can be checked), per-rank step and compute times, batch sizes per step, and
optionally every trained sample index.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from shared import atomic_write_text, init_distributed

from .client import MasterClient
from .inject import from_spec, restart_count
from .trainer import Trainer, TrainerConfig

__all__ = ["JobConfig", "SyntheticRegression", "build_model", "run_job"]


@dataclass(frozen=True)
class JobConfig:
    dataset_size: int = 4096
    features: int = 16
    hidden: int = 32
    dtype: str = "float64"
    lr: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    max_steps: int | None = None
    max_micro_batch: int | None = None
    inject: list[dict[str, Any]] = field(default_factory=list)
    output: str | None = None
    record_indices: bool = False
    pg_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"JobConfig.dtype must be float32 or float64, got {self.dtype!r}")
        if self.dataset_size < 1 or self.features < 1 or self.hidden < 1:
            raise ValueError("dataset_size, features and hidden must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"JobConfig.lr must be > 0, got {self.lr}")
        from_spec(self.inject)  # validates

    @classmethod
    def from_json(cls, text: str) -> JobConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"job config is not JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError("job config must be a JSON object")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown job config keys {sorted(unknown)}")
        return cls(**d)


class SyntheticRegression:
    """``y = tanh(x W1) w2 + noise``, generated from ``seed``; indexable by global sample ids."""

    def __init__(
        self, n: int, features: int, seed: int = 0, dtype: torch.dtype = torch.float64
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, features, generator=g, dtype=torch.float64)
        w1 = torch.randn(features, 8, generator=g, dtype=torch.float64) / features**0.5
        w2 = torch.randn(8, 1, generator=g, dtype=torch.float64)
        self.y = torch.tanh(self.x @ w1) @ w2 + 0.05 * torch.randn(
            n, 1, generator=g, dtype=torch.float64
        )
        self.x, self.y = self.x.to(dtype), self.y.to(dtype)

    def __len__(self) -> int:
        return len(self.x)

    def __call__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[idx], self.y[idx]


def build_model(cfg: JobConfig) -> torch.nn.Module:
    torch.manual_seed(cfg.seed + 1)
    dtype = getattr(torch, cfg.dtype)
    return torch.nn.Sequential(
        torch.nn.Linear(cfg.features, cfg.hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(cfg.hidden, 1),
    ).to(dtype)


def sum_mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((pred - y) ** 2).sum()


def run_job(cfg: JobConfig, address: str | None = None) -> dict[str, Any]:
    """Train in this rank (process group initialised here when needed); returns rank 0's result
    (other ranks return a small dict)."""
    torch.set_num_threads(1)
    if not dist.is_initialized() and "WORLD_SIZE" in os.environ:
        init_distributed("gloo", timeout_s=cfg.pg_timeout_s)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    data = SyntheticRegression(cfg.dataset_size, cfg.features, cfg.seed, getattr(torch, cfg.dtype))
    model = build_model(cfg)
    wrapped: torch.nn.Module = DDP(model) if dist.is_initialized() else model
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    client = MasterClient(address)
    injector = from_spec(cfg.inject)
    trainer = Trainer(
        wrapped,
        opt,
        data,
        sum_mse,
        client,
        TrainerConfig(
            checkpoint_dir=cfg.checkpoint_dir,
            checkpoint_every=cfg.checkpoint_every,
            max_steps=cfg.max_steps,
            max_micro_batch=cfg.max_micro_batch,
            node=os.environ.get("GROUP_RANK", "0"),
        ),
        injector=injector,
        record_indices=cfg.record_indices,
    )
    try:
        res = trainer.fit()
    finally:
        injector.close()
    mine = {
        "rank": rank,
        "steps": res.steps,
        "samples": res.samples,
        "seconds": res.seconds,
        "start_step": res.start_step,
        "step_times": res.step_times,
        "compute_times": res.compute_times,
        "indices": res.trained_indices,
    }
    gathered: list[Any] = [mine]
    if dist.is_initialized():
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
    client.close()
    if rank != 0:
        return {"rank": rank}
    params = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    x, y = data(list(range(len(data))))
    with torch.no_grad():
        final_loss = float(sum_mse(model(x), y)) / len(data)
    out = {
        "world_size": world,
        "restart_count": restart_count(),
        "params_hex": [float(v).hex() for v in params.tolist()],
        "final_loss": final_loss,
        "sizes": res.sizes,
        "losses": res.losses,
        "ranks": gathered,
        "config": asdict(cfg),
    }
    if cfg.output:
        atomic_write_text(cfg.output, json.dumps(out))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m antdt.job", description=__doc__)
    p.add_argument(
        "--config", required=True, help="JSON file (or inline JSON) with JobConfig fields"
    )
    a = p.parse_args(argv)
    text = a.config
    if not text.lstrip().startswith("{"):
        with open(text) as f:
            text = f.read()
    cfg = JobConfig.from_json(text)
    run_job(cfg)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
