"""Planner (§3, "automatic hyper-parameter search" in v1, "guidelines" in v3): enumerate
placements with their parallel degrees, drop those that do not fit in device memory, rank the rest
by the modelled iteration time (:mod:`rlhf_place.cost`).

Search space: strategy x group split x ZeRO stage per trainable model x generation engine (hybrid
gather-once, ZeRO-3 per-token, tensor-parallel degree for Separation) x training micro-batch.

:func:`calibrate_cpu` fits the cost model's device constants to this machine from single-process
measurements of the tiny models, so the planner can be checked against measured iteration times
of real multi-process runs (``python -m rlhf_place bench``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from rlhf_place.cost import Hardware, ModelSpec, PlanSpec, StageCost, Workload, estimate

__all__ = [
    "CalibratedCPU",
    "calibrate_cpu",
    "candidates",
    "choose",
    "cpu_plans",
    "cpu_workload",
    "measure_collectives",
    "plan",
]


def _splits(devices: int, hw: Hardware) -> list[int]:
    if devices <= hw.devices_per_node:
        return list(range(1, devices))
    step = hw.devices_per_node
    return list(range(step, devices, step))


def candidates(
    devices: int,
    hw: Hardware,
    *,
    micro_batches: tuple[int, ...] = (1, 2, 4, 8),
    zero_stages: tuple[int, ...] = (1, 2, 3),
    strategies: tuple[str, ...] = ("flatten", "interleave", "separate"),
    pipelined: bool = False,
) -> list[PlanSpec]:
    """Every plan the search visits on ``devices`` devices."""
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    out: list[PlanSpec] = []
    for mb in micro_batches:
        for z in zero_stages:
            if "flatten" in strategies:
                out.append(PlanSpec("flatten", 0, z, z, "hybrid", 1, mb))
                if z == 3:
                    out.append(PlanSpec("flatten", 0, z, z, "zero3", 1, mb))
            if devices < 2:
                continue
            for s in _splits(devices, hw):
                if "interleave" in strategies:
                    out.append(PlanSpec("interleave", s, z, z, "hybrid", 1, mb))
                if "separate" in strategies:
                    for tp in (1, 2, 4, 8):
                        if s % tp or tp > hw.devices_per_node:
                            continue
                        out.append(PlanSpec("separate", s, z, z, "tp", tp, mb))
                        if pipelined:
                            out.append(PlanSpec("separate", s, z, z, "tp", tp, mb, True))
    return out


def plan(w: Workload, hw: Hardware, devices: int, **kwargs) -> list[StageCost]:
    """All candidates, modelled; those that fit first, each part sorted by iteration time."""
    costs = []
    for p in candidates(devices, hw, **kwargs):
        try:
            costs.append(estimate(p, w, hw, devices))
        except ValueError:
            continue
    if not costs:
        raise ValueError(f"no candidate placement for {devices} devices")
    return sorted(costs, key=lambda c: (not c.fits, c.total))


def choose(w: Workload, hw: Hardware, devices: int, **kwargs) -> StageCost:
    """The fastest plan that fits; ``ValueError`` when none fits (says the smallest need)."""
    ranked = plan(w, hw, devices, **kwargs)
    best = ranked[0]
    if not best.fits:
        need = min(max(c.memory.values()) for c in ranked)
        raise ValueError(
            f"no placement fits {devices} devices of {hw.memory / 1e9:.0f} GB: the least "
            f"memory-hungry needs {need / 1e9:.1f} GB per device"
        )
    return best


# --------------------------------------------------------------------------- CPU calibration


@dataclass(frozen=True)
class CalibratedCPU:
    """Cost-model constants fitted to this machine, and the workload of a run."""

    hardware: Hardware
    workload: Workload
    measurements: dict


def cpu_workload(
    rcfg, n_actor: int, n_critic: int, actor_dims=(2, 64), critic_dims=(2, 64)
) -> Workload:
    """The cost model's :class:`Workload` for an :class:`~rlhf_place.config.RLHFConfig` run."""
    return Workload(
        actor=ModelSpec("actor", float(n_actor), actor_dims[0], actor_dims[1]),
        critic=ModelSpec("critic", float(n_critic), critic_dims[0], critic_dims[1]),
        batch=rcfg.batch_size,
        prompt_len=rcfg.prompt_len,
        gen_len=rcfg.gen_len,
        ppo_epochs=rcfg.ppo.ppo_epochs,
        num_minibatches=rcfg.ppo.num_minibatches,
        rule_reward=rcfg.reward == "rule",
    )


def _cpu_time(fn, repeats: int = 5) -> float:
    """Least process CPU time of ``repeats`` calls: the work itself, not other jobs' load."""
    fn()
    ts = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return min(ts)


def measure_collectives(nbytes: int, repeats: int = 10) -> dict[str, float]:
    """Measured in the running job (call on every rank): collective latency ``alpha`` from 4-byte
    all-reduces, bandwidth from ``nbytes`` all-reduces (ring model), and ``cores``, the effective
    parallelism of the processes (a fixed compute loop alone vs on every rank at once)."""
    import torch
    import torch.distributed as dist

    world = dist.get_world_size()
    small, big = torch.zeros(1), torch.zeros(max(1, nbytes // 4))

    def timed(t) -> float:
        dist.barrier()
        ts = []
        for _ in range(repeats):
            s = time.perf_counter()
            dist.all_reduce(t)
            ts.append(time.perf_counter() - s)
        ts.sort()
        return ts[len(ts) // 2]

    t_small, t_big = timed(small), timed(big)
    steps = 2 * max(1, world - 1)
    alpha = t_small / steps
    frac = 2 * (world - 1) / world if world > 1 else 1.0
    bw = frac * big.numel() * 4 / max(t_big - steps * alpha, 1e-9)

    # effective parallelism: a fixed compute loop on rank 0 alone, then on every rank at once
    a = torch.randn(192, 192, generator=torch.Generator().manual_seed(0))

    def work() -> float:
        s = time.perf_counter()
        for _ in range(300):
            a @ a
        return time.perf_counter() - s

    alone = []
    together = []
    for _ in range(3):
        dist.barrier()
        if dist.get_rank() == 0:
            alone.append(work())
        dist.barrier()
        together.append(work())
        dist.barrier()
    t_alone = torch.tensor([min(alone) if alone else 0.0])
    dist.broadcast(t_alone, src=0)
    t_all = torch.tensor([min(together)])
    dist.all_reduce(t_all, op=dist.ReduceOp.MAX)
    cores = min(float(world), max(1.0, world * float(t_alone) / float(t_all)))
    return {"alpha": alpha, "bw": bw, "t_small": t_small, "t_big": t_big, "cores": cores}


def calibrate_cpu(
    rcfg, *, cores: float | None = None, devices: int = 4, comm: dict[str, float] | None = None
) -> CalibratedCPU:
    """Fit ``flops``, ``call_overhead_s`` and ``decode_overhead_s`` from the process CPU time of
    the tiny actor in this process (forward at two batch sizes, decoding steps); ``comm``
    (from :func:`measure_collectives` in the job) sets the collective latency and bandwidth."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every rank; spinning OpenMP threads would inflate CPU time
    try:
        return _calibrate(rcfg, cores, devices, comm)
    finally:
        torch.set_num_threads(threads)


def _calibrate(rcfg, cores, devices, comm) -> CalibratedCPU:
    import torch

    from rlhf_place import stages
    from rlhf_place.models import build_role, build_tokenizer, make_prompts

    tok = build_tokenizer(rcfg.model)
    actor = build_role("actor", rcfg, tok)
    critic = build_role("critic", rcfg, tok)
    n_a = sum(p.numel() for p in actor.parameters())
    n_c = sum(p.numel() for p in critic.parameters())
    L = rcfg.prompt_len + rcfg.gen_len
    big = max(32, 4 * rcfg.batch_size)  # enough tokens that compute, not overhead, dominates
    small = max(1, rcfg.batch_size // devices)
    seq = torch.randint(7, len(tok), (big, L), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t_big = _cpu_time(lambda: actor(input_ids=seq))
        t_small = _cpu_time(lambda: actor(input_ids=seq[:small]))
    per_token = max((t_big - t_small) / ((big - small) * L), 1e-12)
    flops = 2 * n_a / per_token
    overhead = max(t_small - small * L * per_token, 0.0)
    prompts = make_prompts(tok, replace(rcfg, batch_size=small), 0)
    t_gen = _cpu_time(
        lambda: stages.generate(
            actor, prompts, list(range(small)), max_new_tokens=rcfg.gen_len, eos_id=None
        ),
        repeats=3,
    )
    decode = max((t_gen - overhead) / rcfg.gen_len - 2 * n_a * small / flops, 0.0)
    hw = Hardware(
        name="cpu-processes (calibrated)",
        flops=flops,
        hbm_bw=1e15,  # tiny models: weight reads are not the limit
        memory=4e9,
        bw_intra=comm["bw"] if comm else 1e9,
        bw_inter=comm["bw"] if comm else 1e9,
        devices_per_node=devices,
        alpha=comm["alpha"] if comm else 2e-4,
        call_overhead_s=overhead,
        decode_overhead_s=decode,
        cores=cores if cores is not None else (comm or {}).get("cores", 2.0),
    )
    w = cpu_workload(
        rcfg,
        n_a,
        n_c,
        (rcfg.model.layers, rcfg.model.hidden),
        (rcfg.model.critic_layers, rcfg.model.critic_hidden),
    )
    meas = {
        "forward_big_s": t_big,
        "forward_small_s": t_small,
        "generate_small_s": t_gen,
        "flops": flops,
        "call_overhead_s": overhead,
        "decode_overhead_s": decode,
        "comm": comm,
    }
    return CalibratedCPU(hw, w, meas)


def cpu_plans(devices: int) -> dict[str, PlanSpec]:
    """The executed presets (DDP = ZeRO-0, whole-model replicas) as cost-model plans."""
    half = max(1, devices // 2)
    return {
        "flatten": PlanSpec("flatten", 0, 0, 0, "hybrid", 1, 1 << 20),
        "interleave": PlanSpec("interleave", (devices + 1) // 2, 0, 0, "hybrid", 1, 1 << 20),
        "separate": PlanSpec("separate", half, 0, 0, "hybrid", 1, 1 << 20),
    }
