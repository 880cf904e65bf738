"""Executing a placement for real: one SPMD program per device (process), torch.distributed groups.

Every rank runs :func:`run_rank` with the same configuration and placement. It builds only the
models its groups host, wraps the trainable ones (actor, critic) in a data-parallel engine over
their group (DDP, FSDP2 ``fully_shard`` on a sub-mesh, or DeepSpeed ZeRO-1), and runs the three
stages of each PPO iteration:

1. *Sync*: the generator gets the actor's current weights. Flattening / Interleaving with FSDP2
   gather the shards once per iteration into a plain inference copy (the "gather once" hybrid
   engine substitute); with DDP the replica is used directly. Separation gathers the actor on its
   group and broadcasts it to the generation devices over a bridge group (weight sync).
2. *Generate* on the generator group (each rank its slice of prompts), then share the responses;
   *infer* on each model's group (actor and reference log-probs, critic values, reward scores),
   all groups at once, then exchange the results (group all-gather, world broadcast from the
   group leader). Every rank then holds the whole batch's experience and computes GAE itself.
3. *Train*: actor and critic take PPO steps on their groups concurrently; each rank handles its
   slice of each mini-batch, normalised by the mini-batch's global token count, so the update is
   the single-device update whatever the placement.

Time stamps per stage and rank, bytes per communication category (weight sync, experience),
model-state bytes per role, and the final weights are returned for the caller to merge
(:class:`RunResult`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rlhf_place import stages
from rlhf_place.config import RLHFConfig
from rlhf_place.models import (
    ROLES,
    RuleReward,
    build_role,
    build_tokenizer,
    make_prompts,
    model_state_bytes,
    target_token_ids,
)
from rlhf_place.placement import Placement, PlacementError

__all__ = [
    "ENGINES",
    "RunOptions",
    "RunResult",
    "check_compatible",
    "merge_results",
    "run_rank",
]

ENGINES = ("ddp", "fsdp2", "deepspeed")


@dataclass(frozen=True)
class RunOptions:
    """How a placement is executed.

    Args:
        engine: data-parallel engine of the trainable models: ``"ddp"``, ``"fsdp2"`` or
            ``"deepspeed"`` (ZeRO stage ``zero_stage``; extra ``deepspeed``).
        zero_stage: DeepSpeed ZeRO stage: 1 (bit-equal to DDP in our tests); 2 is refused (its
            updates differed from DDP's, not understood yet); 3 only under Flattening (on a
            device subgroup DeepSpeed's checks across all ranks fail).
        device: ``"cpu"`` or ``"cuda"`` (one GPU per local rank, nccl).
        threads: torch intra-op threads per process (1: processes stand in for devices).
        collect_params: return the final actor and critic weights (for equivalence checks).
    """

    engine: str = "ddp"
    zero_stage: int = 1
    device: str = "cpu"
    threads: int = 1
    collect_params: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0-3, got {self.zero_stage!r}")
        if self.engine == "deepspeed" and self.zero_stage == 2:
            raise ValueError(
                "DeepSpeed ZeRO-2 is not supported: in our runs its updates differed from DDP's "
                "(0.24 relative weight difference after 2 PPO iterations; ZeRO-1 is bit-equal); "
                "use zero_stage=1, or FSDP2 for sharded gradients"
            )
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads must be a positive integer, got {self.threads!r}")


def check_compatible(rcfg: RLHFConfig, placement: Placement) -> None:
    """Every group must split the batch (and each mini-batch it trains on) into equal slices."""
    for role in ("generator", *ROLES):
        n = len(placement.ranks_of(role))
        if rcfg.batch_size % n:
            raise PlacementError(
                f"batch_size={rcfg.batch_size} does not split over the {n} devices of {role}; "
                f"use a multiple of {n}"
            )
    for role in ("actor", "critic"):
        n = len(placement.ranks_of(role))
        if rcfg.minibatch_size % n:
            raise PlacementError(
                f"mini-batch of {rcfg.minibatch_size} sequences does not split over the {n} "
                f"devices training the {role}; change batch_size or num_minibatches"
            )


# --------------------------------------------------------------------------- helpers


class _Timeline:
    """(stage, start, end) seconds relative to the iteration start, on this rank."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[tuple[str, float, float]] = []

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        s = time.perf_counter()
        try:
            yield
        finally:
            self.events.append((stage, s - self.t0, time.perf_counter() - self.t0))


def _chunk(n_rows: int, ranks: tuple[int, ...], rank: int) -> slice:
    k = n_rows // len(ranks)
    i = ranks.index(rank)
    return slice(i * k, (i + 1) * k)


def _inner(m: nn.Module) -> nn.Module:
    """The user module inside a DDP / DeepSpeed wrapper (FSDP2 modules are their own)."""
    return getattr(m, "module", m)


def _gather_rows(local: torch.Tensor, pg: Any, n: int) -> torch.Tensor:
    if n == 1:
        return local.contiguous()
    parts = [torch.empty_like(local) for _ in range(n)]
    dist.all_gather(parts, local.contiguous(), group=pg)
    return torch.cat(parts, dim=0)


def _full_state(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Full (unsharded) parameters by name; a collective over the model's group under FSDP2."""
    sd = _inner(model).state_dict()
    out = {}
    for k in names:
        v = sd[k]
        full = getattr(v, "full_tensor", None)
        out[k] = (full() if callable(full) else v).detach()
    return out


def _param_names(model: nn.Module) -> list[str]:
    return [n for n, _ in _inner(model).named_parameters()]


def _flatten(state: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([state[k].reshape(-1).float() for k in names])


def _wrap(model: nn.Module, engine: str, pg: Any, n: int, device: torch.device, lr: float, opts):
    """Data-parallel engine over the model's group; returns (module, optimizer)."""
    if engine == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        wrapped = DDP(model, process_group=pg, device_ids=ids, broadcast_buffers=False)
        return wrapped, torch.optim.Adam(wrapped.parameters(), lr=lr, foreach=False)
    if engine == "fsdp2":
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.fsdp import fully_shard

        mesh = DeviceMesh.from_group(pg, device.type, mesh_dim_names=("dp",))
        blocks = set(getattr(model, "_no_split_modules", None) or [])
        for m in list(model.modules())[1:]:
            if type(m).__name__ in blocks:
                fully_shard(m, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model, torch.optim.Adam(model.parameters(), lr=lr, foreach=False)
    from rlhf_place.deepspeed_engine import wrap_deepspeed

    return wrap_deepspeed(model, pg, n, lr, opts.zero_stage)


def _response_hash(t: torch.Tensor) -> str:
    return hashlib.sha256(t.cpu().numpy().tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------- the SPMD program


def run_rank(rcfg: RLHFConfig, placement: Placement, opts: RunOptions | None = None) -> dict:
    """Run ``rcfg.iterations`` PPO iterations under ``placement`` on this rank (collective: every
    rank of the default process group calls it with the same arguments)."""
    from shared import record_comm

    opts = opts or RunOptions()
    if not dist.is_initialized():
        raise RuntimeError("run_rank needs torch.distributed initialised (torchrun, spawn or Ray)")
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != placement.world_size:
        raise PlacementError(
            f"placement is for {placement.world_size} devices but the job has {world} processes"
        )
    check_compatible(rcfg, placement)
    torch.set_num_threads(opts.threads)
    if opts.device == "cuda":
        device = torch.device(
            "cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
        )
    else:
        device = torch.device("cpu")

    # process groups: every rank creates every group, in the same order
    pgs: dict[str, Any] = {}
    for name in sorted(placement.groups):
        ranks = placement.groups[name]
        pgs[name] = dist.group.WORLD if len(ranks) == world else dist.new_group(list(ranks))
    actor_ranks = placement.ranks_of("actor")
    gen_ranks = placement.ranks_of("generator")
    bridge = None
    if placement.separated:
        bridge = dist.new_group([actor_ranks[0], *gen_ranks])
    if opts.engine == "deepspeed" and opts.zero_stage == 3 and placement.strategy != "flatten":
        raise PlacementError(
            "DeepSpeed ZeRO-3 cannot run on a device subgroup (its checks span all ranks); use "
            "zero_stage 1/2, FSDP2, or Flattening"
        )

    def pg_of(role: str) -> Any:
        return pgs[placement.roles[role]]

    tok = build_tokenizer(rcfg.model)
    eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else 0
    hosted = placement.roles_on(rank)
    ppo_cfg = rcfg.ppo
    B, Lp, Lg = rcfg.batch_size, rcfg.prompt_len, rcfg.gen_len

    models: dict[str, Any] = {}
    for role in ROLES:
        if role not in hosted:
            continue
        if role == "reward" and rcfg.reward == "rule":
            models[role] = RuleReward(target_token_ids(tok))
        else:
            models[role] = build_role(role, rcfg, tok).to(device)
    optims: dict[str, torch.optim.Optimizer] = {}
    for role, lr in (("actor", ppo_cfg.actor_lr), ("critic", ppo_cfg.critic_lr)):
        if role in hosted:
            n = len(placement.ranks_of(role))
            models[role], optims[role] = _wrap(
                models[role], opts.engine, pg_of(role), n, device, lr, opts
            )
    names = None
    gen_model = None
    if "generator" in hosted or "actor" in hosted:
        names = _param_names(models["actor"]) if "actor" in hosted else None
    if "generator" in hosted and (placement.separated or opts.engine != "ddp"):
        gen_model = build_role("ref", rcfg, tok).to(device)  # a frozen plain copy: shadow actor
        names = names or _param_names(gen_model)

    iterations: list[dict] = []
    comm = {"weight_sync": 0, "experience": 0, "generation_gather": 0}
    for it in range(rcfg.iterations):
        dist.barrier()
        tl = _Timeline()
        prompts = make_prompts(tok, rcfg, it).to(device)

        # ---- stage 1a: the generator gets the actor's current weights
        gen = None
        if placement.separated:
            if "actor" in hosted or "generator" in hosted:
                with tl("sync"), record_comm() as log:
                    if "actor" in hosted:
                        state = _full_state(models["actor"], names)
                        flat = _flatten(state, names) if rank == actor_ranks[0] else None
                    else:
                        numel = sum(p.numel() for p in gen_model.parameters())
                        flat = torch.empty(numel, device=device)
                    if flat is not None:
                        dist.broadcast(flat, src=actor_ranks[0], group=bridge)
                    if "generator" in hosted:
                        torch.nn.utils.vector_to_parameters(flat, gen_model.parameters())
                comm["weight_sync"] += log.total_bytes()
            gen = gen_model
        elif "generator" in hosted:
            if gen_model is None:
                gen = _inner(models["actor"])
            else:
                with tl("sync"), record_comm() as log:
                    state = _full_state(models["actor"], names)
                    gen_model.load_state_dict(state, strict=False)
                comm["generation_gather"] += log.total_bytes()
                gen = gen_model

        # ---- stage 1b: generation on the generator group
        local_resp = None
        if "generator" in hosted:
            with tl("generate"):
                rows = _chunk(B, gen_ranks, rank)
                seeds = stages.prompt_seeds(rcfg.seed, it, torch.arange(B)[rows])
                was_training = gen.training
                gen.eval()
                local_resp = stages.generate(
                    gen,
                    prompts[rows],
                    seeds,
                    max_new_tokens=Lg,
                    temperature=ppo_cfg.temperature,
                    eos_id=eos,
                    pad_id=pad,
                )
                gen.train(was_training)
        with tl("exchange"), record_comm() as log:
            if len(gen_ranks) == world:
                response = _gather_rows(local_resp, dist.group.WORLD, world)
            else:
                k = B // len(gen_ranks)
                parts = []
                for src in gen_ranks:
                    buf = (
                        local_resp
                        if rank == src
                        else torch.empty(k, Lg, dtype=torch.long, device=device)
                    )
                    dist.broadcast(buf, src=src)
                    parts.append(buf)
                response = torch.cat(parts)
        comm["experience"] += log.total_bytes()
        seq = torch.cat([prompts, response], dim=1)
        mask = stages.response_mask(response, eos).to(device)
        am = torch.cat([torch.ones(B, Lp, device=device), mask], dim=1).long()

        # ---- stage 2: inference on every model's group, concurrently across groups
        outs: dict[str, torch.Tensor] = {}
        infers = any(r in hosted for r in ROLES)
        with tl("infer") if infers else contextlib.nullcontext(), torch.no_grad():
            for role in ROLES:
                if role not in hosted:
                    continue
                rows = _chunk(B, placement.ranks_of(role), rank)
                s, a = seq[rows], am[rows]
                # DDP / DeepSpeed: the local replica (no wrapper hooks); FSDP2: the sharded module
                m = models[role] if opts.engine == "fsdp2" else _inner(models[role])
                if role in ("actor", "ref"):
                    outs[role] = stages.response_logprobs(m, s, a, Lp)
                elif role == "critic":
                    outs[role] = stages.response_values(m, s, a, Lp)
                else:
                    outs[role] = stages.reward_scores(models[role], s, a, Lp)
        with tl("exchange"), record_comm() as log:
            full: dict[str, torch.Tensor] = {}
            for role in ROLES:
                rr = placement.ranks_of(role)
                if rank in rr:
                    full[role] = _gather_rows(outs[role], pg_of(role), len(rr))
            for role in ROLES:
                rr = placement.ranks_of(role)
                if len(rr) == world:
                    continue
                shape = (B,) if role == "reward" else (B, Lg)
                buf = full[role].contiguous() if rank in rr else torch.empty(shape, device=device)
                dist.broadcast(buf, src=rr[0])
                full[role] = buf
        comm["experience"] += log.total_bytes()
        exp = stages.assemble(
            seq, Lp, mask, full["actor"], full["ref"], full["critic"], full["reward"], ppo_cfg
        )

        # ---- stage 3: PPO updates, actor and critic groups concurrently
        losses: dict[str, list[float]] = {"actor": [], "critic": []}
        mb = rcfg.minibatch_size
        trains = "actor" in hosted or "critic" in hosted
        with tl("train") if trains else contextlib.nullcontext():
            for _epoch in range(ppo_cfg.ppo_epochs):
                for j in range(ppo_cfg.num_minibatches):
                    norm = float(exp.mask[j * mb : (j + 1) * mb].sum())
                    for role, step in (
                        ("actor", stages.actor_step),
                        ("critic", stages.critic_step),
                    ):
                        if role not in hosted:
                            continue
                        rr = placement.ranks_of(role)
                        sub = _chunk(mb, rr, rank)
                        rows = slice(j * mb + sub.start, j * mb + sub.stop)
                        losses[role].append(
                            step(
                                models[role],
                                optims[role],
                                exp.rows(rows),
                                Lp,
                                ppo_cfg,
                                normalizer=norm,
                                grad_scale=float(len(rr)),
                            )
                        )
        dist.barrier()
        total = time.perf_counter() - tl.t0
        lengths = exp.mask.sum(dim=1)
        kl = float(((exp.logprobs - exp.ref_logprobs) * exp.mask).sum() / exp.mask.sum())
        iterations.append(
            {
                "time_s": total,
                "stages": tl.events,
                "actor_loss": losses["actor"],
                "critic_loss": losses["critic"],
                "score_mean": float(exp.scores.mean()),
                "kl": kl,
                "response_len": float(lengths.mean()),
                "response_hash": _response_hash(response),
            }
        )

    memory = {}
    for role in ROLES:
        if role in hosted and isinstance(models[role], nn.Module):
            sb = model_state_bytes(_inner(models[role]), optims.get(role))
            memory[role] = {"params": sb.params, "grads": sb.grads, "optimizer": sb.optimizer}
    if gen_model is not None:
        sb = model_state_bytes(gen_model)
        memory["generator"] = {"params": sb.params, "grads": 0, "optimizer": 0}
    final: dict[str, list[float]] = {}
    if opts.collect_params:
        for role in ("actor", "critic"):
            if role in hosted:
                nm = _param_names(models[role])
                state = _full_state(models[role], nm)
                if rank == placement.ranks_of(role)[0]:
                    final[role] = _flatten(state, nm).cpu()
    return {
        "rank": rank,
        "roles": list(hosted),
        "iterations": iterations,
        "comm": comm,
        "memory": memory,
        "final": final,
    }


# --------------------------------------------------------------------------- merging


@dataclass
class RunResult:
    """One run, merged over ranks."""

    placement: dict
    engine: str
    iteration_times: list[float]
    score_mean: list[float]
    kl: list[float]
    actor_loss: list[list[float]]  # per iteration, per PPO step: the mini-batch loss
    critic_loss: list[list[float]]
    response_hashes: list[str]
    timelines: list[list[list[tuple[str, float, float]]]]  # [iteration][rank] -> events
    comm_bytes: dict[str, int]
    memory: dict[int, dict[str, dict[str, int]]]  # rank -> role -> bytes
    final_params: dict[str, torch.Tensor] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "placement": self.placement,
            "engine": self.engine,
            "iteration_times_s": self.iteration_times,
            "score_mean": self.score_mean,
            "kl": self.kl,
            "actor_loss": self.actor_loss,
            "critic_loss": self.critic_loss,
            "comm_bytes": self.comm_bytes,
            "memory": {str(k): v for k, v in self.memory.items()},
        }


def merge_results(per_rank: list[dict], placement: Placement, engine: str) -> RunResult:
    """Combine :func:`run_rank` outputs: losses summed over each group's slices, times maxed."""
    by_rank = {r["rank"]: r for r in per_rank}
    n_it = len(per_rank[0]["iterations"])
    actor_ranks, critic_ranks = placement.ranks_of("actor"), placement.ranks_of("critic")

    def summed(role: str, ranks: tuple[int, ...], i: int) -> list[float]:
        parts = [by_rank[r]["iterations"][i][f"{role}_loss"] for r in ranks]
        return [float(sum(x)) for x in zip(*parts, strict=True)]

    comm: dict[str, int] = {}
    for r in per_rank:
        for k, v in r["comm"].items():
            comm[k] = comm.get(k, 0) + int(v)
    final = {}
    for r in per_rank:
        final.update(r["final"])
    return RunResult(
        placement=placement.to_dict(),
        engine=engine,
        iteration_times=[
            max(by_rank[r]["iterations"][i]["time_s"] for r in by_rank) for i in range(n_it)
        ],
        score_mean=[per_rank[0]["iterations"][i]["score_mean"] for i in range(n_it)],
        kl=[per_rank[0]["iterations"][i]["kl"] for i in range(n_it)],
        actor_loss=[summed("actor", actor_ranks, i) for i in range(n_it)],
        critic_loss=[summed("critic", critic_ranks, i) for i in range(n_it)],
        response_hashes=[per_rank[0]["iterations"][i]["response_hash"] for i in range(n_it)],
        timelines=[
            [by_rank[r]["iterations"][i]["stages"] for r in sorted(by_rank)] for i in range(n_it)
        ],
        comm_bytes=comm,
        memory={r["rank"]: r["memory"] for r in per_rank},
        final_params=final,
    )
