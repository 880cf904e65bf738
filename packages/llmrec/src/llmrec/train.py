"""Training (§3.2.4, §4.1.4 and the official ``run_llmrec.py``): AdamW with linear warm-up and
decay, gradient clipping, S same-domain negatives per example, periodic validation on a sample of
users with early stopping on Recall@1, atomic resumable checkpoints, and data-parallel training
with ``torch.distributed`` (DDP; gloo on CPU, nccl with CUDA; launch with ``torchrun``).

With ``W`` processes each rank takes every ``W``-th example of the epoch's shared permutation
(the remainder is dropped so every rank takes the same number of steps); ``batch_size`` is per
rank, so the global batch is ``W * batch_size``. Validation is split over the ranks and the hit
counts are summed. Rank 0 writes the checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from shared import atomic_write, progress, seed_everything

from .mixing import Examples
from .model import LLMRec
from .negatives import sample_train_negatives
from .preprocess import RecData

__all__ = ["FitResult", "TrainConfig", "fit"]

_METRICS = ("recall@1", "recall@10", "ndcg@10", "mrr")


@dataclass(frozen=True)
class TrainConfig:
    """Options of :func:`fit` (defaults: the official code's, except ``lr`` for tiny models).

    Args:
        epochs: passes over the training examples.
        batch_size: examples per step on each rank.
        lr: peak learning rate (paper: 5e-5 for pre-trained BERT/OPT; 1e-3 suits the tiny
            randomly initialised default models).
        weight_decay, warmup_ratio, grad_clip: AdamW decay 1e-3, warm-up 0.001, clip 1.0.
        n_negatives: S same-domain negatives per example (10).
        in_batch_negatives: also use the batch's other positives as negatives.
        eval_every: validate every this many steps (0: after every epoch).
        patience: stop after this many validations without improvement (10).
        select_metric: validation metric for early stopping and the best model (Recall@1).
        max_steps: stop after this many steps in total (``None``: no limit).
        checkpoint_dir: where ``last.pt`` / ``best.pt`` go (``None``: no checkpoints).
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
    """

    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup_ratio: float = 0.001
    grad_clip: float = 1.0
    n_negatives: int = 10
    in_batch_negatives: bool = False
    eval_every: int = 0
    patience: int = 10
    select_metric: str = "recall@1"
    max_steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ValueError("lr and grad_clip must be > 0, weight_decay >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.n_negatives < 1:
            raise ValueError("n_negatives must be >= 1")
        if self.eval_every < 0 or self.patience < 1:
            raise ValueError("eval_every must be >= 0 and patience >= 1")
        if self.select_metric not in _METRICS:
            raise ValueError(f"select_metric must be one of {_METRICS}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 or None")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("resume=True needs checkpoint_dir")


@dataclass
class FitResult:
    steps: int
    epochs_done: float
    best_metric: float | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _metric_sums(ranks: torch.Tensor) -> dict[str, float]:
    r = ranks.to(torch.float64)
    return {
        "recall@1": float((r < 1).sum()),
        "recall@10": float((r < 10).sum()),
        "ndcg@10": float(torch.where(r < 10, 1 / torch.log2(r + 2), torch.zeros_like(r)).sum()),
        "mrr": float((1 / (r + 1)).sum()),
        "n": float(len(r)),
    }


def validate(
    model: LLMRec, valid: Examples, negatives: np.ndarray | None, item_domain: np.ndarray
) -> dict[str, float]:
    """Validation metrics, split over the ranks: sampled when ``negatives`` is given, else full
    in-domain ranking."""
    from .evaluate import full_ranks, sampled_ranks

    rank, world = _world()
    idx = np.arange(rank, len(valid), world)
    items = model.item_vectors()
    users = model.user_vectors(valid.hist[idx]) if len(idx) else items[:0]
    if len(idx) == 0:
        ranks = torch.zeros(0)
    elif negatives is not None:
        ranks = sampled_ranks(users, items, valid.targets[idx], negatives[idx])
    else:
        ranks = full_ranks(users, items, valid.targets[idx], item_domain, "domain")
    sums = _metric_sums(ranks)
    if world > 1:
        t = torch.tensor([sums[k] for k in (*_METRICS, "n")], dtype=torch.float64)
        dist.all_reduce(t)
        sums = dict(zip((*_METRICS, "n"), t.tolist(), strict=True))
    n = max(sums["n"], 1.0)
    return {k: sums[k] / n for k in _METRICS} | {"n": sums["n"]}


def _save_ckpt(path: Path, state: dict[str, Any]) -> None:
    with atomic_write(path) as f:
        torch.save(state, f)


def fit(
    model: LLMRec,
    data: RecData,
    train: Examples,
    config: TrainConfig | None = None,
    *,
    valid: Examples | None = None,
    valid_negatives: np.ndarray | None = None,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` on ``train``; validate on ``valid`` (if given), keep the best weights."""
    cfg = config or TrainConfig()
    if len(train) == 0:
        raise ValueError("no training examples (check the mixing strategy and domains)")
    rank, world = _world()
    seed_everything(cfg.seed + rank)
    device = torch.device(cfg.device)
    model.to(device)
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    steps_per_epoch = len(train) // world // cfg.batch_size + (
        1 if (len(train) // world) % cfg.batch_size else 0
    )
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    warm = max(1, math.ceil(cfg.warmup_ratio * total))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "norm" not in n.lower()]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim > 1 and "norm" not in n.lower())
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        eps=1e-4 if cfg.lr <= 1e-4 else 1e-8,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    dom_items = data.domain_items()
    ckdir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    state = {"epoch": 0, "step_in_epoch": 0, "step": 0, "best": None, "bad": 0, "history": []}
    if ckdir is not None and cfg.resume and (ckdir / "last.pt").exists():
        ck = torch.load(ckdir / "last.pt", map_location=device, weights_only=False)
        if ck.get("n_train") != len(train) or ck.get("world") != world:
            raise ValueError(
                f"{ckdir / 'last.pt'} was written for {ck.get('n_train')} examples on "
                f"{ck.get('world')} rank(s), not {len(train)} on {world}: cannot resume"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        state = ck["state"]
        torch.set_rng_state(ck["torch_rng"])
    t0 = time.perf_counter()
    stopped = False

    def evaluate_now() -> bool:
        nonlocal stopped
        if valid is None or len(valid) == 0:
            return False
        m = validate(model, valid, valid_negatives, data.item_domain)
        m.update(step=state["step"], epoch=state["epoch"])
        state["history"].append(m)
        score = m[cfg.select_metric]
        improved = state["best"] is None or score > state["best"]
        if improved:
            state["best"], state["bad"] = score, 0
            if ckdir is not None and rank == 0:
                _save_ckpt(ckdir / "best.pt", {"model": model.state_dict(), "metrics": m})
            state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state["bad"] += 1
        if state["bad"] >= cfg.patience:
            stopped = True
        return improved

    def checkpoint() -> None:
        if ckdir is None or rank != 0:
            return
        keep = {k: v for k, v in state.items() if k != "best_state"}
        _save_ckpt(
            ckdir / "last.pt",
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "state": keep,
                "torch_rng": torch.get_rng_state(),
                "n_train": len(train),
                "world": world,
                "config": asdict(cfg),
            },
        )

    bar = progress(total=total, desc=desc, disable=None if rank == 0 else True)
    bar.update(state["step"])
    net.train()
    while state["epoch"] < cfg.epochs and not stopped:
        e = state["epoch"]
        perm = np.random.default_rng([cfg.seed, e]).permutation(len(train))
        per_rank = len(perm) // world
        mine = perm[rank::world][:per_rank]
        for s in range(state["step_in_epoch"] * cfg.batch_size, per_rank, cfg.batch_size):
            if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
                stopped = True
                break
            b = mine[s : s + cfg.batch_size]
            # negatives seeded per step, so a resumed run draws what an uninterrupted one would
            rng = np.random.default_rng([cfg.seed, e, rank, state["step_in_epoch"]])
            negs = sample_train_negatives(
                rng, train.targets[b], data.item_domain, dom_items, cfg.n_negatives
            )
            loss = net(train.hist[b], train.targets[b], negs, in_batch=cfg.in_batch_negatives)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            state["step"] += 1
            state["step_in_epoch"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if cfg.eval_every and state["step"] % cfg.eval_every == 0:
                evaluate_now()
                checkpoint()
                if stopped:
                    break
        else:
            state["epoch"] += 1
            state["step_in_epoch"] = 0
            if not cfg.eval_every:
                evaluate_now()
            checkpoint()
    bar.close()
    if "best_state" in state:
        model.load_state_dict(state["best_state"])
    elif ckdir is not None and (ckdir / "best.pt").exists():
        model.load_state_dict(torch.load(ckdir / "best.pt", map_location=device)["model"])
    model.eval()
    if world > 1:
        dist.barrier()
    return FitResult(
        steps=state["step"],
        epochs_done=state["epoch"] + state["step_in_epoch"] / max(1, steps_per_epoch),
        best_metric=state["best"],
        stopped_early=stopped and state["bad"] >= cfg.patience,
        history=state["history"],
        seconds=time.perf_counter() - t0,
    )
