"""The same training run under DeepSpeed ZeRO-1/2/3 (CPU accelerator, gloo): the stock baseline.

ZeRO-1 = NNG, ZeRO-2 = NGG, ZeRO-3 = GGG (dossier §3.2). :func:`compare_with_deepspeed` trains the
``mlp`` model of :mod:`paro.experiment` on 4 ranks under each DeepSpeed stage and under this
package's engine with the matching strategy, from the same weights on the same data, and reports
the parameter differences and DeepSpeed's recorded communication.

Needs the ``deepspeed`` extra (``DS_BUILD_OPS=0 pip install 'paro[deepspeed]'``). On CPU: fp32
only, ``torch_adam`` (no JIT-compiled fused Adam), the shared-memory comm op disabled (its JIT
build takes minutes).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any

import torch

from paro.accounting import scope_bytes
from paro.experiment import RunConfig, loss_fn, make_model, micro_batches, run_strategies
from paro.topology import Topology
from shared import record_comm, spawn

__all__ = ["STAGE_TO_STRATEGY", "availability", "compare_with_deepspeed", "run_deepspeed"]

STAGE_TO_STRATEGY = {1: "NNG", 2: "NGG", 3: "GGG"}


def availability() -> tuple[bool, str]:
    """``(True, "")`` when deepspeed is importable, else ``(False, reason)``."""
    if importlib.util.find_spec("deepspeed") is None:
        return (
            False,
            "deepspeed is not installed (pip install 'paro[deepspeed]' with DS_BUILD_OPS=0)",
        )
    return True, ""


def _ds_config(cfg: RunConfig, stage: int) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": cfg.batch,
        "gradient_accumulation_steps": cfg.accum_steps,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": cfg.lr, "weight_decay": 0.01, "torch_adam": True},
        },
        "zero_optimization": {"stage": stage},
        "gradient_clipping": 0.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def run_deepspeed(cfg: RunConfig, stages: tuple[int, ...] = (1, 2, 3)) -> dict[str, Any]:
    """Inside :func:`shared.spawn`: train under each DeepSpeed ZeRO stage; flat final params."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    import deepspeed
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")
    import torch.distributed as dist

    rank = dist.get_rank()
    topo = Topology(dist.get_world_size(), cfg.group_size)
    out: dict[str, Any] = {"params": {}, "bytes": {}}
    for stage in stages:
        model = make_model(cfg)
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(), config=_ds_config(cfg, stage)
        )
        with record_comm() as log:
            for step in range(cfg.steps):
                for x, y in micro_batches(cfg, rank, step):
                    loss = loss_fn(cfg, engine(x), y)
                    engine.backward(loss)
                    engine.step()
        out["bytes"][stage] = scope_bytes(log, topo)
        params = list(engine.module.parameters())
        if stage == 3:
            with deepspeed.zero.GatheredParameters(params):
                flat = torch.cat([p.detach().reshape(-1) for p in params]).clone()
        else:
            flat = torch.cat([p.detach().reshape(-1) for p in params]).clone()
        out["params"][stage] = flat
        engine.destroy()
    return out


def _both(cfg: RunConfig) -> dict[str, Any]:
    ds = run_deepspeed(cfg)
    ours = run_strategies(cfg, with_ddp=False)
    return {"ds": ds, "ours": ours}


def compare_with_deepspeed(steps: int = 2, timeout_s: float = 600.0) -> dict[str, Any]:
    """DeepSpeed ZeRO-1/2/3 vs NNG/NGG/GGG on 4 ranks (2 groups of 2); relative differences."""
    ok, why = availability()
    if not ok:
        raise RuntimeError(why)
    cfg = RunConfig(model="mlp", strategies=("NNG", "NGG", "GGG"), steps=steps, accum_steps=2)
    env = {"DS_ACCELERATOR": "cpu", "LOCAL_SIZE": str(cfg.group_size)}
    res = spawn(_both, 4, args=(cfg,), timeout_s=timeout_s, env=env)
    rel, ds_bytes, ours_bytes = {}, {}, {}
    for stage, name in STAGE_TO_STRATEGY.items():
        worst = 0.0
        for r in res:
            a = r["ds"]["params"][stage]
            b = r["ours"]["strategies"][name]["params"]
            worst = max(worst, float((a - b).norm() / b.norm()))
        key = f"ZeRO-{stage}"
        rel[key] = worst
        ds_bytes[key] = res[0]["ds"]["bytes"][stage]
        ours_bytes[name] = res[0]["ours"]["strategies"][name]["bytes"]
    return {
        "rel_diff": rel,
        "deepspeed_bytes_rank0": ds_bytes,
        "paro_bytes_rank0": ours_bytes,
        "steps": steps,
        "accum_steps": cfg.accum_steps,
    }
