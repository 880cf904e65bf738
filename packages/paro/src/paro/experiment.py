"""Small models, synthetic data and the multi-strategy run shared by tests, demo and bench.

Everything here runs inside processes started by :func:`shared.spawn`: one process group, the
PaRO groups built once, then every requested strategy (and a torch DDP reference) trained from the
same initial weights on the same per-rank data, with communication recorded by
:func:`shared.record_comm` and memory read from the engine's buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from paro.accounting import scope_bytes
from paro.cost import ModelStates, comm_volume, memory
from paro.engine import ParoDataParallel
from paro.topology import build_groups
from shared import progress, record_comm

__all__ = [
    "DeepMLP",
    "RunConfig",
    "horing_check",
    "make_model",
    "make_optimizer",
    "micro_batches",
    "run_ddp",
    "run_demo",
    "run_many",
    "run_strategies",
]


@dataclass(frozen=True)
class RunConfig:
    """A training run: model, optimizer, data and sharding settings (validated)."""

    group_size: int = 2
    steps: int = 3
    accum_steps: int = 2
    model: str = "mlp"  # "mlp" (AdamW, MSE) | "dyadic" (SGD, exact arithmetic) | "peft"
    width: int = 32
    batch: int = 4
    lr: float = 1e-2
    seed: int = 0
    global_comm: str = "hier"
    reshard_after_forward: bool = True
    strategies: tuple[str, ...] = ("NNN", "NIG", "GGG")
    show_progress: bool = False  # a progress bar over strategies on rank 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.model not in ("mlp", "dyadic", "peft"):
            raise ValueError(f"model must be 'mlp', 'dyadic' or 'peft', got {self.model!r}")
        for name in ("group_size", "steps", "accum_steps", "width", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def make_model(cfg: RunConfig) -> nn.Module:
    """The run's model, identical on every rank (seeded).

    - ``mlp``: Linear-Tanh-Linear-Tanh-Linear, all trainable.
    - ``dyadic``: a frozen integer Linear then a trainable Linear with dyadic weights; with a
      loss linear in the output every gradient is an integer, so sums are exact in any order.
    - ``peft``: a frozen MLP body and a small trainable head (ING's setting).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    w = cfg.width
    if cfg.model == "mlp":
        model = nn.Sequential(
            nn.Linear(16, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, 8)
        )
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        return model
    if cfg.model == "dyadic":
        body = nn.Linear(8, 12, bias=False)
        head = nn.Linear(12, 10)
        with torch.no_grad():
            body.weight.copy_(torch.randint(-2, 3, body.weight.shape, generator=gen).float())
            head.weight.copy_(torch.randint(-8, 9, head.weight.shape, generator=gen) / 16.0)
            head.bias.copy_(torch.randint(-8, 9, head.bias.shape, generator=gen) / 16.0)
        body.weight.requires_grad_(False)
        return nn.Sequential(body, head)
    body = nn.Sequential(nn.Linear(16, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh())
    head = nn.Linear(w, 8)
    model = nn.Sequential(body, head)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    for p in body.parameters():
        p.requires_grad_(False)
    return model


class DeepMLP(nn.Module):
    """``n_layers`` residual blocks ``h + tanh(W h + b)`` of width ``width`` in one
    ``nn.ModuleList`` and no other parameter: each block is one per-layer gathering unit and the
    root unit is empty (the per-layer memory claim and the emulated step-time claim)."""

    def __init__(self, n_layers: int = 8, width: int = 64, seed: int = 0) -> None:
        super().__init__()
        if n_layers < 1 or width < 1:
            raise ValueError(f"n_layers and width must be >= 1, got {n_layers}, {width}")
        gen = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + torch.tanh(layer(x))
        return x


def per_layer_memory(
    n_layers: int = 8,
    width: int = 64,
    strategies: tuple[str, ...] = ("NIG", "IIG", "GGG"),
    group_size: int = 2,
) -> dict[str, Any]:
    """Peak of the engine's transient buffers (exact accounting, :class:`paro.gathering.MemoryMeter`:
    gathered parameter buffers and full gradient buffers) during 2 AdamW steps of 2 micro-steps,
    per-layer vs whole-model gathering, with the steady-state bytes and one layer's gathered size
    (its full parameters plus its full gradient buffer)."""
    rank = dist.get_rank()
    groups = build_groups(group_size)
    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(rank)
    batches = [(torch.randn(8, width, generator=gen), torch.randn(8, width, generator=gen))] * 2
    for s in strategies:
        row: dict[str, Any] = {}
        for label, wrap in (("whole", None), ("per_layer", "auto")):
            eng = ParoDataParallel(
                DeepMLP(n_layers, width),
                lambda ps: torch.optim.AdamW(ps, lr=1e-3),
                s,
                groups=groups,
                accum_steps=2,
                wrap=wrap,
            )
            for _ in range(2):
                eng.train_step(batches, nn.functional.mse_loss)
            steady = sum(eng.state_bytes().values())
            row[label] = {
                "transient_peak": eng.meter.peak,
                "steady": steady,
                "peak": steady + eng.meter.peak,
                "units": len(eng.units),
            }
        layer = eng._layers[0].train  # per-layer engine: one block's buffer
        assert layer is not None
        full = layer.full_bytes()
        row["layer_gathered_bytes"] = (0 if s[0] == "N" else full) + (0 if s[1] == "N" else full)
        out[s] = row
    return out


def make_optimizer(cfg: RunConfig):
    """``params -> optimizer`` for the run: AdamW for mlp/peft, plain SGD (lr 2^-4) for dyadic."""
    if cfg.model == "dyadic":
        return lambda ps: torch.optim.SGD(ps, lr=1.0 / 16)
    return lambda ps: torch.optim.AdamW(ps, lr=cfg.lr, weight_decay=0.01)


def loss_fn(cfg: RunConfig, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if cfg.model == "dyadic":
        return (out * y).sum()
    return nn.functional.mse_loss(out, y)


def micro_batches(cfg: RunConfig, rank: int, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``accum_steps`` micro-batches of ``rank`` at ``step`` (deterministic)."""
    gen = torch.Generator().manual_seed(10_000 * (cfg.seed + 1) + 100 * step + rank)
    out = []
    for _ in range(cfg.accum_steps):
        if cfg.model == "dyadic":
            x = torch.randint(-3, 4, (cfg.batch, 8), generator=gen).float()
            y = torch.randint(-2, 3, (cfg.batch, 10), generator=gen).float()
        else:
            x = torch.randn(cfg.batch, 16, generator=gen)
            y = torch.randn(cfg.batch, 8, generator=gen)
        out.append((x, y))
    return out


def _model_states(model: nn.Module, cfg: RunConfig) -> ModelStates:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    os_bytes = 0 if cfg.model == "dyadic" else 8  # SGD without momentum: none; AdamW: m and v
    return ModelStates(trainable, frozen, 4, 4, os_bytes)


def run_ddp(cfg: RunConfig) -> torch.Tensor:
    """Reference: the same run under ``torch.nn.parallel.DistributedDataParallel``.

    Returns the trainable parameters after ``cfg.steps`` steps, flat.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model(cfg)
    ddp = DDP(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(cfg)(params)
    rank = dist.get_rank()
    for step in range(cfg.steps):
        batches = micro_batches(cfg, rank, step)
        for i, (x, y) in enumerate(batches):
            last = i == len(batches) - 1
            if last:
                loss = loss_fn(cfg, ddp(x), y) / cfg.accum_steps
                loss.backward()
            else:
                with ddp.no_sync():
                    loss = loss_fn(cfg, ddp(x), y) / cfg.accum_steps
                    loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def run_strategies(cfg: RunConfig, with_ddp: bool = True) -> dict[str, Any]:
    """Train every strategy of ``cfg``; per strategy: final params, measured and modelled bytes
    (intra/inter/global, per rank, summed over steps), memory (measured and modelled), losses.

    Runs inside :func:`shared.spawn`; every rank returns its own dict.
    """
    groups = build_groups(cfg.group_size)
    topo = groups.topology
    rank = dist.get_rank()
    result: dict[str, Any] = {"rank": rank, "strategies": {}}
    if with_ddp:
        result["ddp_params"] = run_ddp(cfg)
    names = cfg.strategies
    if cfg.show_progress and rank == 0:
        names = progress(names, desc="strategies")
    for name in names:
        model = make_model(cfg)
        states = _model_states(model, cfg)
        engine = ParoDataParallel(
            model,
            make_optimizer(cfg),
            name,
            groups=groups,
            accum_steps=cfg.accum_steps,
            global_comm=cfg.global_comm,
            reshard_after_forward=cfg.reshard_after_forward,
        )
        losses = []
        with record_comm() as log:
            for step in range(cfg.steps):
                batches = micro_batches(cfg, rank, step)
                losses.append(engine.train_step(batches, lambda o, y: loss_fn(cfg, o, y)))
        measured = scope_bytes(log, topo)
        vol = comm_volume(
            name,
            topo,
            states,
            cfg.accum_steps,
            reshard_after_forward=cfg.reshard_after_forward,
            global_comm=cfg.global_comm,
        )
        mem_model = memory(name, topo, states)
        result["strategies"][name] = {
            "params": engine.full_parameters(),
            "losses": losses,
            "bytes": measured,
            "bytes_model": {
                "intra": vol.intra * cfg.steps,
                "inter": vol.inter * cfg.steps,
                "global": vol.global_ * cfg.steps,
            },
            "ops": len(log.ops),
            "memory": engine.state_bytes(),
            "memory_model": {
                "params": mem_model.params,
                "grads": mem_model.grads,
                "optimizer_states": mem_model.optimizer_states,
            },
        }
    return result


def run_many(cfgs: list[RunConfig]) -> list[dict[str, Any]]:
    """:func:`run_strategies` for several configurations in one set of processes."""
    return [run_strategies(c) for c in cfgs]


def horing_check(group_size: int, numel: int = 100_003) -> dict[str, Any]:
    """HO-Ring vs ``dist.all_reduce`` on integer data (exact) and its recorded bytes vs the model.

    ``numel`` need not divide the world; bytes are compared on a size that does.
    """
    from paro.cost import allreduce_volume
    from paro.horing import ho_ring_all_reduce_
    from paro.topology import Topology

    rank, world = dist.get_rank(), dist.get_world_size()
    topo = Topology(world, group_size)
    x = torch.randint(-100, 100, (numel,), generator=torch.Generator().manual_seed(rank)).float()
    ref = x.clone()
    dist.all_reduce(ref)
    ho_ring_all_reduce_(x, topo)
    even = torch.ones(world * 4096)
    with record_comm() as log:
        ho_ring_all_reduce_(even, topo)
    model = allreduce_volume(even.numel() * 4, topo, "horing")
    return {
        "equal": bool(torch.equal(x, ref)),
        "numel": numel,
        "bytes": scope_bytes(log, topo),
        "model": {"intra": model["per_rank_intra"], "inter": model["per_rank_inter"]},
        "sends": len(log.filter("isend")),
    }


def run_demo(cfg: RunConfig) -> dict[str, Any]:
    """The demo's job: every strategy of ``cfg`` plus an HO-Ring check, in one set of processes."""
    out = run_strategies(cfg)
    out["horing"] = horing_check(cfg.group_size)
    out["per_layer"] = per_layer_memory(8, 64, ("NIG", "GGG"), cfg.group_size)
    return out


# ---- checkpoint resharding and mixed precision (issue 16 claims)
def _train64(engine: ParoDataParallel, cfg: RunConfig, steps: range, parts: int) -> None:
    """float64 steps; with ``parts`` > 1 each rank takes the data of ``parts`` ranks of the
    reference run (same global batch on a smaller world)."""
    rank = dist.get_rank()
    for step in steps:
        per_rank = [micro_batches(cfg, parts * rank + j, step) for j in range(parts)]
        for i in range(cfg.accum_steps):
            x = torch.cat([b[i][0] for b in per_rank]).double()
            y = torch.cat([b[i][1] for b in per_rank]).double()
            engine.backward(loss_fn(cfg, engine(x), y))
        engine.step()


def checkpoint_first(
    cfg: RunConfig, directory: str, strategy: str, resume: tuple[str, ...]
) -> dict:
    """Reference world: ``cfg.steps`` float64 AdamW steps under ``strategy`` with a sharded
    checkpoint after half of them; then fresh engines (other initial weights) under each of
    ``resume`` load it and finish the run. Returns flat final parameters."""
    groups = build_groups(cfg.group_size)
    half = cfg.steps // 2

    def engine(name: str, seed: int) -> ParoDataParallel:
        model = make_model(RunConfig(**{**_fields(cfg), "seed": seed})).double()
        return ParoDataParallel(
            model, make_optimizer(cfg), name, groups=groups, accum_steps=cfg.accum_steps
        )

    eng = engine(strategy, cfg.seed)
    _train64(eng, cfg, range(half), 1)
    eng.save_checkpoint(directory)
    _train64(eng, cfg, range(half, cfg.steps), 1)
    out = {"final": eng.full_parameters(), "resumed": {}}
    for name in resume:
        fresh = engine(name, cfg.seed + 1)
        how = fresh.load_checkpoint(directory)
        _train64(fresh, cfg, range(half, cfg.steps), 1)
        out["resumed"][name] = {"how": how, "final": fresh.full_parameters()}
    return out


def checkpoint_second(cfg: RunConfig, directory: str, strategy: str, parts: int) -> dict:
    """A smaller world (each rank holding ``parts`` reference ranks' data) resumes the checkpoint."""
    groups = build_groups(cfg.group_size)
    model = make_model(RunConfig(**{**_fields(cfg), "seed": cfg.seed + 2})).double()
    eng = ParoDataParallel(
        model, make_optimizer(cfg), strategy, groups=groups, accum_steps=cfg.accum_steps
    )
    how = eng.load_checkpoint(directory)
    _train64(eng, cfg, range(cfg.steps // 2, cfg.steps), parts)
    return {"how": how, "final": eng.full_parameters()}


def _fields(cfg: RunConfig) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


def mixed_precision_run(cfg: RunConfig) -> dict[str, Any]:
    """Each strategy of ``cfg`` in fp32 and in bf16 compute with fp32 masters: per-rank bytes
    (measured, and the memory model with 2 + 2 + 12 bytes per parameter) and the loss on held-out
    data after ``cfg.steps`` steps."""
    groups = build_groups(cfg.group_size)
    rank = dist.get_rank()
    out: dict[str, Any] = {}
    probe = micro_batches(RunConfig(**{**_fields(cfg), "seed": cfg.seed + 99}), rank, 0)[0]
    for name in cfg.strategies:
        row: dict[str, Any] = {}
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            model = make_model(cfg)
            states = _model_states(model, cfg)
            eng = ParoDataParallel(
                model,
                make_optimizer(cfg),
                name,
                groups=groups,
                accum_steps=cfg.accum_steps,
                param_dtype=dtype,
            )
            for step in range(cfg.steps):
                eng.train_step(
                    micro_batches(cfg, rank, step), lambda o, y: loss_fn(cfg, o.float(), y)
                )
            with torch.no_grad():
                row[f"loss_{label}"] = float(loss_fn(cfg, eng(probe[0]).float(), probe[1]))
            if dtype is not None:
                mp = ModelStates(states.numel, states.frozen_numel, 2, 2, states.os_bytes + 4)
                m = memory(name, groups.topology, mp)
                row["bytes"] = eng.state_bytes()
                row["bytes_model"] = {
                    "params": m.params,
                    "grads": m.grads,
                    "optimizer_states": m.optimizer_states,
                }
        out[name] = row
    return out


def bench_engine_jobs(
    cfg_ckpt: RunConfig, directory: str, cfg_mp: RunConfig, layer_width: int = 64
) -> dict[str, Any]:
    """One 4-rank spawn of the bench: checkpoint reference + resumes, and mixed precision."""
    return {
        "ckpt": checkpoint_first(cfg_ckpt, directory, "NIG", ("NIG", "IIG")),
        "mixed": mixed_precision_run(cfg_mp),
        "per_layer_memory": per_layer_memory(8, layer_width),
    }


def bench_jobs(
    cfgs: list[RunConfig],
    cfg_ckpt: RunConfig,
    directory: str,
    cfg_mp: RunConfig,
    layer_width: int = 64,
) -> dict[str, Any]:
    """The bench's 4-rank work in one set of processes: strategy runs + engine jobs."""
    return {
        "runs": run_many(cfgs),
        **bench_engine_jobs(cfg_ckpt, directory, cfg_mp, layer_width),
    }
