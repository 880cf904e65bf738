"""Trainer fed by streaming parquet batches: BCE, Adam (+ SparseAdam for embeddings), early
stopping on validation AUC, fixed seeds; and :func:`run` for one task x model experiment."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from shared import progress, seed_everything

from .features import Batch
from .metrics import Predictions, auc, evaluate
from .models import CTRModel

__all__ = ["RunResult", "TrainConfig", "Trainer", "run"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (validated)."""

    epochs: int = 3
    batch_size: int = 1024
    lr: float = 2e-3
    embedding_lr: float = 1e-2
    weight_decay: float = 0.0
    patience: int = 1
    seed: int = 0
    device: str = "cpu"
    max_steps_per_epoch: int | None = None
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise ValueError("need epochs >= 1, batch_size >= 1, patience >= 0")
        if not (self.lr > 0 and self.embedding_lr > 0) or self.weight_decay < 0:
            raise ValueError("learning rates must be > 0 and weight_decay >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1 or None")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError("max_steps_per_epoch must be >= 1 or None")


class Trainer:
    """Fits a :class:`~antm2c.models.CTRModel` on a re-iterable stream of batches."""

    def __init__(self, model: CTRModel, config: TrainConfig | None = None) -> None:
        self.model, self.cfg = model, config or TrainConfig()
        self.device = torch.device(self.cfg.device)
        self.model.to(self.device)
        sparse = [
            p
            for n, p in model.named_parameters()
            if n.split(".")[0] in ("sp_emb", "sp_w", "seq_emb", "seq_w")
        ]
        ids = {id(p) for p in sparse}
        dense = [p for p in model.parameters() if id(p) not in ids]
        self.opt_sparse = torch.optim.SparseAdam(sparse, lr=self.cfg.embedding_lr)
        self.opt_dense = torch.optim.Adam(dense, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.loss = nn.BCEWithLogitsLoss()
        self.history: list[dict[str, float]] = []

    def _to(self, batch: Batch) -> Batch:
        return {k: v.to(self.device) for k, v in batch.items()}

    def fit(
        self, train: Iterable[Batch], val: Iterable[Batch] | None = None, desc: str = "train"
    ) -> list[dict[str, float]]:
        cfg = self.cfg
        best, best_state, bad_epochs = -np.inf, None, 0
        for epoch in range(cfg.epochs):
            self.model.train()
            losses = []
            total = len(train) if hasattr(train, "__len__") else None  # type: ignore[arg-type]
            if cfg.max_steps_per_epoch:
                total = min(total or cfg.max_steps_per_epoch, cfg.max_steps_per_epoch)
            bar = progress(desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", total=total, unit="batch")
            for step, batch in enumerate(train):
                if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
                    break
                b = self._to(batch)
                logit = self.model(b)
                loss = self.loss(logit, b["label"])
                self.opt_sparse.zero_grad(set_to_none=True)
                self.opt_dense.zero_grad(set_to_none=True)
                loss.backward()
                self.opt_sparse.step()
                self.opt_dense.step()
                losses.append(loss.detach().item())
                bar.update(1)
            bar.close()
            rec = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
            }
            if val is not None:
                p = self.predict(val)
                rec["val_auc"] = auc(p.label, p.prob) if len(p) else float("nan")
                score = rec["val_auc"] if np.isfinite(rec["val_auc"]) else -rec["train_loss"]
                if score > best:
                    best, bad_epochs = score, 0
                    best_state = copy.deepcopy(self.model.state_dict())
                else:
                    bad_epochs += 1
            self.history.append(rec)
            if val is not None and bad_epochs > cfg.patience:
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return self.history

    @torch.no_grad()
    def predict(self, stream: Iterable[Batch]) -> Predictions:
        self.model.eval()
        cols: dict[str, list[np.ndarray]] = {
            k: []
            for k in ("label", "prob", "scene", "user", "item", "cold_user", "cold_item", "row")
        }
        for batch in stream:
            b = self._to(batch)
            cols["prob"].append(torch.sigmoid(self.model(b)).double().cpu().numpy())
            for k in ("label", "scene", "user", "item", "cold_user", "cold_item", "row"):
                cols[k].append(batch[k].cpu().numpy())
        cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
        cat["cold_user"] = cat["cold_user"].astype(bool)
        cat["cold_item"] = cat["cold_item"].astype(bool)
        return Predictions(**cat)


@dataclass
class RunResult:
    """One experiment: task, model, metrics on the test split, history, timings."""

    task: str
    model: str
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    seconds: float
    n_params: int
    config: dict[str, Any] = field(default_factory=dict)
    predictions: Predictions | None = None

    def summary(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "task": self.task,
            "model": self.model,
            "auc": m["overall"]["auc"],
            "logloss": m["overall"]["logloss"],
            "gauc": m["overall"].get("gauc"),
            "scene_avg_auc": m["scene_avg_auc"],
            "cold_user_auc": m["cold_user"]["auc"],
            "cold_item_auc": m["cold_item"]["auc"],
            "seconds": self.seconds,
            "params": self.n_params,
        }


def run(
    task: Any,
    model: str,
    config: TrainConfig | None = None,
    *,
    encoder: Any = None,
    model_kwargs: dict[str, Any] | None = None,
    eval_split: str = "test",
) -> RunResult:
    """Fit ``model`` on ``task`` (a :class:`~antm2c.tasks.Task`) and evaluate on ``eval_split``.

    Pass a fitted ``encoder`` to share vocabularies across models of one leaderboard.
    """
    from .zoo import build_model

    cfg = config or TrainConfig()
    if cfg.threads is not None:
        # small CTR models: one intra-op thread is fastest on shared CPUs (spin-waiting
        # OpenMP threads collapse under contention); None leaves torch's setting alone
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    enc = encoder or task.fit_encoder()
    net = build_model(model, enc, **(model_kwargs or {}))
    trainer = Trainer(net, cfg)
    train_s, val_s, test_s = task.streams(
        enc, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device
    )
    trainer.fit(train_s, val_s, desc=f"{task.name}/{model}")
    pred = trainer.predict({"test": test_s, "val": val_s}[eval_split])
    metrics = evaluate(pred)
    return RunResult(
        task=task.name,
        model=model,
        metrics=metrics,
        history=trainer.history,
        seconds=time.perf_counter() - t0,
        n_params=sum(p.numel() for p in net.parameters()),
        config=asdict(cfg),
        predictions=pred,
    )
