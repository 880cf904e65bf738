"""Training and evaluation entry points, single process or under ``torchrun`` (multi-node).

``python -m gmeta train --tasks T.parquet --out RUN`` runs on one process;
``torchrun --nnodes N --nproc-per-node P [--rdzv-endpoint HOST:PORT] -m gmeta train ...`` runs
the same job hybrid-parallel: the table row-sharded over all ``N * P`` ranks, dense layers
replicated, each global batch of tasks split over the ranks by Meta-IO. With gloo (CPU) set
``GLOO_SOCKET_IFNAME`` on multi-node runs; with CUDA the backend is nccl.

Under torchrun the process group is built on a prefix of the rendezvous store keyed by
``TORCHELASTIC_RESTART_COUNT``: after a failed rank torchrun restarts every worker, and gloo in
torch 2.13 otherwise picks up the previous attempt's peer addresses and hangs. A restarted job
resumes from the newest complete checkpoint in ``RUN/checkpoints`` and, because batches are a
pure function of the step, ends with the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from gmeta.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from gmeta.embedding import SHARDINGS, RowShardedEmbedding
from gmeta.maml import MAMLConfig
from gmeta.metaio import MetaIOLoader, read_header
from gmeta.metrics import auc, logloss
from gmeta.model import DLRM, DLRMConfig
from gmeta.trainer import MetaTrainer, row_optimizer_for
from shared import atomic_write_text, default_backend, progress

__all__ = [
    "TrainConfig",
    "build_trainer",
    "evaluate",
    "init_from_env",
    "train",
]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class TrainConfig:
    """A meta-training run (validated on construction; CLI flags map onto these fields).

    ``steps``: outer steps (``None``: ``epochs`` passes over the task file). ``checkpoint_every``
    outer steps (0: only at the end). ``fail_at_step`` is fault injection for tests: rank
    ``fail_rank`` SIGKILLs itself after that step on the first attempt.
    """

    tasks: str
    out: str
    steps: int | None = None
    epochs: int = 1
    tasks_per_batch: int = 32
    embedding_dim: int = 8
    bottom: tuple[int, ...] = (32,)
    top: tuple[int, ...] = (32,)
    maml: MAMLConfig = field(default_factory=MAMLConfig)
    sharding: str = "mod"
    seed: int = 0
    dtype: str = "float32"
    init_std: float = 0.1
    checkpoint_every: int = 0
    keep: int = 2
    resume: bool = True
    prefetch: int = 2
    fail_at_step: int | None = None
    fail_rank: int = 0

    def __post_init__(self) -> None:
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(
                f"TrainConfig.steps must be a positive int or None, got {self.steps!r}"
            )
        for name in ("epochs", "tasks_per_batch", "embedding_dim", "keep"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {v!r}")
        if self.checkpoint_every < 0 or self.prefetch < 0:
            raise ValueError("TrainConfig.checkpoint_every and prefetch must be >= 0")
        if self.sharding not in SHARDINGS:
            raise ValueError(f"TrainConfig.sharding must be one of {SHARDINGS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"TrainConfig.dtype must be one of {tuple(DTYPES)}")
        object.__setattr__(self, "bottom", tuple(self.bottom))
        object.__setattr__(self, "top", tuple(self.top))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        m = dict(d.pop("maml"))
        m["adam_betas"] = tuple(m["adam_betas"])
        return TrainConfig(maml=MAMLConfig(**m), **d)


def init_from_env(timeout_s: float = 300.0) -> tuple[int, int]:
    """Initialise torch.distributed when launched by torchrun (or with RANK/WORLD_SIZE set).

    Returns ``(rank, world)``; ``(0, 1)`` without a launcher. Under torchelastic the group is
    built on a store prefix per restart attempt (see the module docstring).
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    backend = default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    timeout = _dt.timedelta(seconds=timeout_s)
    if "TORCHELASTIC_RESTART_COUNT" in os.environ:
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            world,
            is_master=(not agent_store and rank == 0),
            timeout=timeout,
        )
        attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
        prefix = dist.PrefixStore(f"gmeta/attempt{attempt}", store)
        dist.init_process_group(backend, store=prefix, rank=rank, world_size=world, timeout=timeout)
    else:
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout)
    return rank, world


def build_trainer(cfg: TrainConfig, header: dict[str, Any], *, group: Any = None) -> MetaTrainer:
    """Model (seeded: equal on every rank), row-sharded table and trainer for a task file."""
    dtype = DTYPES[cfg.dtype]
    mcfg = DLRMConfig(
        num_fields=header["num_fields"],
        embedding_dim=cfg.embedding_dim,
        num_dense=header["num_dense"],
        bottom=cfg.bottom,
        top=cfg.top,
    )
    torch.manual_seed(cfg.seed)
    model = DLRM(mcfg).to(dtype)
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if (dist.is_initialized() and dist.get_backend() == "nccl")
        else torch.device("cpu")
    )
    model = model.to(device)
    table = RowShardedEmbedding(
        int(header["num_rows"]),
        cfg.embedding_dim,
        group=group,
        sharding=cfg.sharding,
        optimizer=row_optimizer_for(cfg.maml),
        init_std=cfg.init_std,
        seed=cfg.seed,
        dtype=dtype,
        device=device,
    )
    return MetaTrainer(model, table, cfg.maml, group=group)


def _fault(cfg: TrainConfig, step: int, rank: int) -> None:
    if (
        cfg.fail_at_step is not None
        and step == cfg.fail_at_step
        and rank == cfg.fail_rank
        and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    ):
        os.kill(os.getpid(), signal.SIGKILL)


def train(cfg: TrainConfig, *, verbose: bool = True) -> dict[str, Any]:
    """Run (or resume) a meta-training job; every rank calls it. Returns a summary on every rank."""
    rank, world = init_from_env()
    header = read_header(cfg.tasks)
    out = Path(cfg.out)
    ckdir = out / "checkpoints"
    trainer = build_trainer(cfg, header)
    resumed_from = None
    if cfg.resume:
        ck = latest_checkpoint(ckdir)
        if ck is not None:
            load_checkpoint(ck, trainer)
            resumed_from = trainer.step_count
    loader = MetaIOLoader(
        cfg.tasks,
        cfg.tasks_per_batch,
        rank=rank,
        world=world,
        prefetch=cfg.prefetch,
        epochs=None if cfg.steps is not None else cfg.epochs,
        start_batch=trainer.step_count,
    )
    total = cfg.steps if cfg.steps is not None else loader.total_batches
    assert total is not None
    if rank == 0:
        atomic_write_text(out / "config.json", json.dumps(cfg.to_json(), indent=2) + "\n")
    losses: list[float] = []
    t0 = time.perf_counter()
    n_tasks = 0
    quiet = {"disable": True} if (not verbose or rank != 0) else {}
    bar = progress(total=total, desc=f"meta-train (W={world})", **quiet)
    bar.update(trainer.step_count)
    it = iter(loader)
    while trainer.step_count < total:
        batch = next(it)
        st = trainer.step(batch)
        losses.append(st.loss)
        n_tasks += st.tasks
        bar.update(1)
        bar.set_postfix(loss=f"{st.loss:.4f}")
        if rank == 0:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": st.step, "loss": st.loss, "tasks": st.tasks}) + "\n")
        if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 and st.step < total:
            save_checkpoint(ckdir, trainer, extra={"config": cfg.to_json()}, keep=cfg.keep)
        _fault(cfg, st.step, rank)
    bar.close()
    seconds = time.perf_counter() - t0
    save_checkpoint(ckdir, trainer, extra={"config": cfg.to_json()}, keep=cfg.keep)
    return {
        "rank": rank,
        "world": world,
        "steps": trainer.step_count,
        "resumed_from": resumed_from,
        "final_loss": losses[-1] if losses else None,
        "mean_loss": float(np.mean(losses)) if losses else None,
        "tasks_per_s": n_tasks / seconds if seconds > 0 and n_tasks else None,
        "checkpoint": str(latest_checkpoint(ckdir)),
    }


def evaluate(
    trainer: MetaTrainer,
    tasks: str | Path,
    *,
    tasks_per_batch: int = 64,
    adapt: bool = True,
) -> dict[str, float]:
    """Query-set AUC and log loss over every task of a file, after adapting each task to its
    support set (``adapt=False``: the meta-parameters as they are). Collective; every rank gets
    the same numbers."""
    rank = trainer.table.rank
    world = trainer.table.world
    loader = MetaIOLoader(tasks, tasks_per_batch, rank=rank, world=world, prefetch=0)
    ys, ps = [], []
    for batch in loader:
        p = trainer.predict(batch, adapt=adapt)
        m = batch.q_mask
        ys.append(batch.q_label[m].numpy())
        ps.append(p[m].detach().cpu().numpy())
    y = np.concatenate(ys) if ys else np.zeros(0)
    p = np.concatenate(ps) if ps else np.zeros(0)
    if trainer.distributed:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, (y, p), group=trainer.group)
        y = np.concatenate([a for a, _ in parts])
        p = np.concatenate([b for _, b in parts])
    return {"auc": auc(y, p), "logloss": logloss(y, p), "n": len(y)}
