"""Trainer integration: synchronous data-parallel training (DDP) on step plans from the master.

Each step, every rank asks the master for the plan of step ``k`` (the same cached answer on every
rank, so a batch-size change applies at the same step everywhere), trains its index ranges with the
AntDT-DD loss scaling (:mod:`antdt.dd`), steps the optimizer, and rank 0 commits the step. The
agent (:mod:`antdt.agent`) carries out the controller's KILL_RESTART before the step it is planned
for. Checkpoints hold the model, the optimizer and the master's shard snapshot *as of the same
step*; after a torchrun restart every rank loads the last one and rank 0 restores the master from
it, so the job resumes exactly (the float64 tests show bit-identical final parameters).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from shared import atomic_write

from .agent import Agent
from .client import MasterClient
from .dd import ComputeTimer, dd_backward
from .inject import Injector, restart_count, set_attempt
from .monitor import StepStat

__all__ = ["TrainResult", "Trainer", "TrainerConfig", "load_checkpoint", "save_checkpoint"]

CKPT_NAME = "antdt-checkpoint.pt"
_log = logging.getLogger("antdt.trainer")


@dataclass(frozen=True)
class TrainerConfig:
    """``checkpoint_every``: steps between checkpoints (0: only the initial one, needed to restore
    the master after a restart before the first periodic one). ``max_steps``: stop after this many
    steps (None: until the shard service is drained)."""

    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    max_steps: int | None = None
    max_micro_batch: int | None = None
    node: str = ""
    report_stats: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.max_micro_batch is not None and self.max_micro_batch < 1:
            raise ValueError(f"max_micro_batch must be >= 1, got {self.max_micro_batch}")


@dataclass
class TrainResult:
    steps: int
    samples: int  # samples this rank trained in this attempt
    seconds: float
    step_times: list[float] = field(default_factory=list)
    compute_times: list[float] = field(default_factory=list)
    sizes: list[list[int]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    start_step: int = 0
    trained_indices: list[int] = field(default_factory=list)


def save_checkpoint(
    path: str | Path, step: int, model: torch.nn.Module, optimizer: Any, snapshot: dict
) -> None:
    """Atomically write ``{step, model, optimizer, antdt snapshot}``."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "antdt": snapshot,
    }
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict | None:
    p = Path(path)
    if not p.exists():
        return None
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f"checkpoint {p} is unreadable ({e}); move it away to start fresh"
        ) from e
    if not isinstance(state, dict) or not {"step", "model", "optimizer", "antdt"} <= set(state):
        raise RuntimeError(f"checkpoint {p} is not an antdt checkpoint")
    return state


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DDP) else model


class Trainer:
    """Runs in every rank (launched by torchrun; the process group must be initialised).

    ``dataset(indices) -> (x, y)`` fetches samples by global index; ``loss_fn(pred, y)`` returns
    the **sum** over the batch. ``model`` may be a DDP module (recommended) or a plain module in a
    single-process run.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        client: MasterClient,
        config: TrainerConfig | None = None,
        *,
        injector: Injector | None = None,
        device: torch.device | str = "cpu",
        record_indices: bool = False,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.dataset = dataset
        self.loss_fn = loss_fn
        self.client = client
        self.config = config or TrainerConfig()
        self.injector = injector or Injector()
        self.device = torch.device(device)
        self.record_indices = record_indices
        if dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world = 0, 1
        self.timer = ComputeTimer().install(model) if isinstance(model, DDP) else None
        self.agent = Agent(client, self.rank, self.world, save=self._save)
        self.ckpt_path = (
            Path(self.config.checkpoint_dir) / CKPT_NAME if self.config.checkpoint_dir else None
        )

    # ------------------------------------------------------------------ checkpoints
    def _save(self, step: int) -> None:
        """Rank 0 writes the checkpoint of the state after ``step`` (its commit already done)."""
        if self.ckpt_path is None or self.rank != 0:
            return
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            self.ckpt_path, step, _unwrap(self.model), self.optimizer, self.client.snapshot()
        )

    def _resume(self) -> int:
        """Load the last checkpoint (restoring the master from it); returns the first step."""
        if self.ckpt_path is None:
            return 0
        state = load_checkpoint(self.ckpt_path)
        if state is None:
            if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0:
                raise RuntimeError(
                    "restarted by torchrun but no checkpoint exists: the shard service cannot be "
                    "rewound; set TrainerConfig.checkpoint_dir on a shared path"
                )
            self._save(-1)
            if dist.is_initialized():
                dist.barrier()
            return 0
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.rank == 0:
            self.client.restore(state["antdt"])
        if dist.is_initialized():
            dist.barrier()
        return int(state["step"]) + 1

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        cfg = self.config
        start = self._resume()
        # the job-wide attempt: the master's generation moves on at every restore
        set_attempt(int(self.client.status()["generation"]))
        res = TrainResult(0, 0, 0.0, start_step=start)
        t_begin = time.perf_counter()
        step = start
        rc = restart_count()
        self.model.train()
        # latency hiding: the next step's plan is fetched while this step computes, and the
        # statistics are reported in the background (neither is on the critical path)
        pool = ThreadPoolExecutor(2, thread_name_prefix="antdt-rpc")
        reports: list[Future] = []
        nxt: Future | None = None
        try:
            while cfg.max_steps is None or step < cfg.max_steps:
                t0 = time.perf_counter()
                plan = (
                    nxt.result()
                    if nxt is not None
                    else self.client.plan_step(step, self.rank, self.world)
                )
                nxt = None
                if plan.end_of_data:
                    break
                self.agent.before_step(plan)  # KILL_RESTART exits here (after a checkpoint)
                if cfg.max_steps is None or step + 1 < cfg.max_steps:
                    nxt = pool.submit(self.client.plan_step, step + 1, self.rank, self.world)
                idx = plan.indices(self.rank)
                x, y = self.dataset(idx)
                x, y = x.to(self.device), y.to(self.device)
                tc = time.perf_counter()
                self.injector.before_compute(self.rank, step, len(idx))
                loss = dd_backward(
                    self.model,
                    self.loss_fn,
                    x,
                    y,
                    global_batch=plan.global_batch,
                    world_size=self.world,
                    max_micro_batch=cfg.max_micro_batch,
                )
                t_end = (
                    self.timer.last_ready
                    if self.timer and self.timer.last_ready > tc
                    else time.perf_counter()
                )
                compute_s = t_end - tc
                self.injector.after_compute(self.rank, step, compute_s)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.rank == 0:
                    self.client.commit_step(step, plan.generation)
                res.steps += 1
                res.samples += len(idx)
                res.compute_times.append(compute_s)
                res.sizes.append(list(plan.sizes))
                res.losses.append(loss)
                if self.record_indices:
                    res.trained_indices.extend(idx)
                self.injector.after_step(self.rank, step)
                if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                    self._save(step)
                step_s = time.perf_counter() - t0  # the whole step, boundary to boundary
                res.step_times.append(step_s)
                if cfg.report_stats:
                    stat = StepStat(
                        self.rank,
                        step,
                        len(idx),
                        compute_s,
                        step_s,
                        rc,
                        cfg.node or f"rank{self.rank}",
                    )
                    reports.append(pool.submit(self.client.report, stat))
                step += 1
            for f in reports:
                if f.exception() is not None:
                    _log.warning("a statistics report failed: %s", f.exception())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if dist.is_initialized():
            dist.barrier()
        res.seconds = time.perf_counter() - t_begin
        return res


def env_node() -> str:
    return os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", "0"))
