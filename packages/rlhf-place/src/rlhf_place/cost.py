"""Cost model of one PPO iteration under a placement: per-stage time and per-device memory.

The paper's equations were not available to us (dossier §2.5); this is our derivation from the
quantities it names (model sizes, device count, memory, bandwidth), labelled as such:

- *Compute*: forward ``2 Psi`` FLOPs per token, forward+backward ``6 Psi``; a device runs at
  ``flops`` (effective, i.e. peak x utilisation). Each model call also pays ``call_overhead_s``
  (kernel launches, Python), which dominates tiny models and decoding.
- *Decoding*: one step reads every weight once (``2 Psi / hbm_bw`` on the device holding them)
  plus the KV cache; compute ``2 Psi b``; ZeRO-3 generation without a hybrid engine also
  all-gathers the whole actor every step (DeepSpeed-Chat's ``synced_gpus`` path).
- *Communication*: ring collectives, ``alpha + (k-1)/k S / bw`` per all-gather / reduce-scatter,
  twice that per all-reduce; ``bw`` is the intra-node link when the group fits in a node, else the
  inter-node one.
- *Memory* (ZeRO accounting, bf16 + fp32 Adam): trainable ``2 Psi / d_p + 2 Psi / d_g +
  12 Psi / d_os`` + activations; frozen ``2 Psi / d_p``; generation adds the KV cache and, for
  gather-once generation, the gathered actor.
- *Contention*: ``cores`` (CPU machines: processes share cores) slows compute by
  ``active processes / cores`` when more processes compute at once; GPUs have ``cores=None``.

Stage composition (per iteration):
Flattening ``T_gen(N) + sum_M T_inf(M, N) + T_train(a, N) + T_train(c, N)``;
Interleaving ``T_gen(N_A) + max(T_inf(a)+T_inf(ref) on A, T_inf(c)+T_inf(r) on B) + T_xfer +
max(T_train(a, A), T_train(c, B))``;
Separation ``T_sync + T_gen(N_G, TP) + sum_M T_inf(M, N_T) + T_xfer + T_train(a, N_T) +
T_train(c, N_T)`` (synchronous, on-policy; ``pipelined=True`` overlaps generation of the next
batch with training: ``max(T_gen, rest)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

__all__ = [
    "Hardware",
    "ModelSpec",
    "PlanSpec",
    "StageCost",
    "Workload",
    "collective_time",
    "estimate",
]

BF16 = 2


def _pos(name: str, v: float) -> None:
    if not (isinstance(v, int | float) and v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A transformer by its size: parameters, layers, hidden width."""

    name: str
    params: float
    layers: int
    hidden: int

    def __post_init__(self) -> None:
        _pos("params", self.params)
        if self.layers < 1 or self.hidden < 1:
            raise ValueError("layers and hidden must be >= 1")

    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.hidden * BF16


@dataclass(frozen=True)
class Workload:
    """One PPO iteration: ``batch`` prompts of ``prompt_len``, ``gen_len`` response tokens."""

    actor: ModelSpec
    critic: ModelSpec
    ref: ModelSpec | None = None
    reward: ModelSpec | None = None
    batch: int = 256
    prompt_len: int = 256
    gen_len: int = 256
    ppo_epochs: int = 1
    num_minibatches: int = 1
    rule_reward: bool = False

    def __post_init__(self) -> None:
        for n in ("batch", "prompt_len", "gen_len", "ppo_epochs", "num_minibatches"):
            if not isinstance(getattr(self, n), int) or getattr(self, n) < 1:
                raise ValueError(f"{n} must be a positive integer, got {getattr(self, n)!r}")
        if self.ref is None:
            object.__setattr__(self, "ref", self.actor)
        if self.reward is None:
            object.__setattr__(self, "reward", self.critic)

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.gen_len


@dataclass(frozen=True)
class Hardware:
    """A device type and its links. ``flops`` is effective FLOP/s (peak x utilisation).

    ``decode_overhead_s``: fixed cost of one decoding step of a training-framework model (HF
    ``generate`` / hybrid engine); ``engine_decode_overhead_s``: the same for an
    inference-optimised engine (Separation's ``gen="tp"``), default equal."""

    name: str
    flops: float
    hbm_bw: float
    memory: float
    bw_intra: float
    bw_inter: float
    devices_per_node: int = 8
    alpha: float = 10e-6
    call_overhead_s: float = 0.0
    decode_overhead_s: float = 0.0
    engine_decode_overhead_s: float | None = None
    cores: float | None = None

    def __post_init__(self) -> None:
        for n in ("flops", "hbm_bw", "memory", "bw_intra", "bw_inter"):
            _pos(n, getattr(self, n))
        if self.devices_per_node < 1:
            raise ValueError("devices_per_node must be >= 1")

    def bw(self, group: int) -> float:
        return self.bw_intra if group <= self.devices_per_node else self.bw_inter

    def slowdown(self, active: int) -> float:
        return 1.0 if self.cores is None else max(1.0, active / self.cores)


def collective_time(kind: str, nbytes: float, group: int, hw: Hardware) -> float:
    """Ring-model time of one collective over ``group`` devices."""
    if group <= 1:
        return 0.0
    frac = (group - 1) / group
    if kind in ("all_gather", "reduce_scatter"):
        return hw.alpha * (group - 1) + frac * nbytes / hw.bw(group)
    if kind == "all_reduce":
        return 2 * (hw.alpha * (group - 1) + frac * nbytes / hw.bw(group))
    if kind == "broadcast":
        return hw.alpha * math.ceil(math.log2(group)) + nbytes / hw.bw(group)
    raise ValueError(f"unknown collective {kind!r}")


@dataclass(frozen=True)
class PlanSpec:
    """A strategy with its parallel degrees.

    ``strategy``: flatten / interleave / separate. ``split``: devices of the actor group
    (interleave) or of the generation group (separate). ``zero_actor`` / ``zero_critic``: ZeRO
    stages (0-3). ``gen``: ``"hybrid"`` (gather the actor once, decode locally; DeepSpeed-Chat
    Hybrid Engine / FSDP2 unshard), ``"zero3"`` (per-token all-gathers), ``"tp"`` (tensor-parallel
    inference engine of degree ``gen_tp``; separation only). ``micro_batch``: sequences per device
    per training micro-step. ``pipelined``: separation overlaps generation with training.
    """

    strategy: str
    split: int = 0
    zero_actor: int = 3
    zero_critic: int = 3
    gen: str = "hybrid"
    gen_tp: int = 1
    micro_batch: int = 4
    pipelined: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in ("flatten", "interleave", "separate"):
            raise ValueError(f"unknown strategy {self.strategy!r}")
        if self.gen not in ("hybrid", "zero3", "tp"):
            raise ValueError(f"gen must be hybrid, zero3 or tp, got {self.gen!r}")
        if self.gen == "tp" and self.strategy != "separate":
            raise ValueError("a tensor-parallel generation engine needs Separation")
        for z in (self.zero_actor, self.zero_critic):
            if z not in (0, 1, 2, 3):
                raise ValueError(f"ZeRO stage must be 0-3, got {z}")
        if self.micro_batch < 1 or self.gen_tp < 1:
            raise ValueError("micro_batch and gen_tp must be >= 1")
        if self.pipelined and self.strategy != "separate":
            raise ValueError("only Separation can pipeline generation with training")

    def label(self) -> str:
        extra = f"/{self.split}" if self.strategy != "flatten" else ""
        g = f"{self.gen}{self.gen_tp if self.gen == 'tp' else ''}"
        return (
            f"{self.strategy}{extra} z{self.zero_actor}{self.zero_critic} {g} mb{self.micro_batch}"
            + (" pipelined" if self.pipelined else "")
        )


@dataclass(frozen=True)
class StageCost:
    """Modelled seconds per stage and peak bytes per device (by group)."""

    plan: PlanSpec
    devices: int
    stages: dict[str, float]
    memory: dict[str, float]
    fits: bool
    total: float = field(default=0.0)

    def as_dict(self) -> dict:
        return {
            "plan": self.plan.label(),
            "devices": self.devices,
            "total_s": self.total,
            "stages_s": self.stages,
            "memory_bytes": self.memory,
            "fits": self.fits,
        }


def _train_state_bytes(psi: float, stage: int, d: int) -> float:
    d_os = d if stage >= 1 else 1
    d_g = d if stage >= 2 else 1
    d_p = d if stage >= 3 else 1
    return BF16 * psi / d_p + BF16 * psi / d_g + 12 * psi / d_os


def _activation_bytes(m: ModelSpec, micro_batch: int, seq: int) -> float:
    # ~34 s h bytes per layer per sequence (bf16, no recomputation; Korthikanti et al. 2022)
    return 34.0 * seq * m.hidden * m.layers * micro_batch


def _inference(m: ModelSpec, w: Workload, d: int, zero: int, hw: Hardware, active: int) -> float:
    """One forward over prompt+response of the whole batch, data-parallel over ``d`` devices."""
    tokens = w.batch * w.seq_len / d
    t = 2 * m.params * tokens / hw.flops * hw.slowdown(active) + hw.call_overhead_s
    if zero >= 3:
        t += collective_time("all_gather", BF16 * m.params, d, hw)
    return t


def _train(
    m: ModelSpec, w: Workload, d: int, zero: int, mb: int, hw: Hardware, active: int
) -> float:
    steps = w.ppo_epochs * w.num_minibatches
    seqs_per_dev = w.batch / w.num_minibatches / d
    micro = max(1, math.ceil(seqs_per_dev / mb))
    compute = 6 * m.params * seqs_per_dev * w.seq_len / hw.flops * hw.slowdown(active)
    compute += 2 * hw.call_overhead_s * micro
    g = BF16 * m.params
    if zero <= 1:
        comm = collective_time("all_reduce", g, d, hw)
    else:
        comm = micro * collective_time("reduce_scatter", g, d, hw)
        if zero == 2:
            comm += collective_time("all_gather", g, d, hw)
    if zero == 3:
        comm += micro * 2 * collective_time("all_gather", g, d, hw)
    return steps * (compute + comm)


def _generation(
    w: Workload, d: int, plan: PlanSpec, hw: Hardware, active: int
) -> tuple[float, float]:
    """(seconds, per-device bytes) to sample the batch on ``d`` devices."""
    a = w.actor
    tp = plan.gen_tp if plan.gen == "tp" else 1
    replicas = max(1, d // tp)
    b = w.batch / replicas
    slow = hw.slowdown(active)
    prefill = 2 * a.params * b * w.prompt_len / tp / hw.flops * slow + hw.call_overhead_s
    kv = a.kv_bytes_per_token() * b * w.seq_len / tp
    step = max(
        BF16 * a.params / tp / hw.hbm_bw + kv / 2 / hw.hbm_bw,
        2 * a.params * b / tp / hw.flops * slow,
    )
    if plan.gen == "tp" and hw.engine_decode_overhead_s is not None:
        step += hw.engine_decode_overhead_s  # inference-optimised engine (vLLM-like)
    else:
        step += hw.decode_overhead_s
    if tp > 1:  # two all-reduces of the activations per layer per step
        step += 2 * a.layers * collective_time("all_reduce", BF16 * b * a.hidden, tp, hw)
    gathered = 0.0
    t = prefill + w.gen_len * step
    if plan.gen == "zero3" and plan.zero_actor >= 3:
        t += w.gen_len * collective_time("all_gather", BF16 * a.params, d, hw)
    elif plan.strategy != "separate" and plan.zero_actor >= 3:
        t += collective_time("all_gather", BF16 * a.params, d, hw)  # gather once
        gathered = BF16 * a.params
    return t, kv + gathered


def estimate(plan: PlanSpec, w: Workload, hw: Hardware, devices: int) -> StageCost:
    """Modelled stage times and per-device memory of ``plan`` on ``devices`` devices."""
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    a, c, f, r = w.actor, w.critic, w.ref, w.reward
    mb, za, zc = plan.micro_batch, plan.zero_actor, plan.zero_critic
    seq = w.seq_len
    xfer_bytes = w.batch * (seq * 8 + 4 * w.gen_len * 4)  # sequences + 4 per-token tensors
    st: dict[str, float] = {}
    mem: dict[str, float] = {}
    if plan.strategy == "flatten":
        n = devices
        gen_t, gen_mem = _generation(w, n, plan, hw, n)
        st["generate"] = gen_t
        frozen_stage = 3 if za >= 3 else 0
        st["infer"] = (
            sum(
                _inference(m, w, n, z, hw, n)
                for m, z in ((a, za), (f, frozen_stage), (c, zc), (r, frozen_stage))
            )
            if not w.rule_reward
            else sum(
                _inference(m, w, n, z, hw, n) for m, z in ((a, za), (f, frozen_stage), (c, zc))
            )
        )
        # responses + four per-token results gathered over the group
        st["exchange"] = 5 * collective_time("all_gather", xfer_bytes / 5, n, hw)
        st["train"] = _train(a, w, n, za, mb, hw, n) + _train(c, w, n, zc, mb, hw, n)
        fz = 1 if frozen_stage < 3 else n
        mem["all"] = (
            _train_state_bytes(a.params, za, n)
            + _train_state_bytes(c.params, zc, n)
            + BF16 * f.params / fz
            + (0 if w.rule_reward else BF16 * r.params / fz)
            + _activation_bytes(a, mb, seq)
            + gen_mem
        )
    elif plan.strategy == "interleave":
        na = plan.split
        nb = devices - na
        if not 1 <= na < devices:
            raise ValueError(f"interleave split must be in [1, {devices - 1}], got {na}")
        gen_t, gen_mem = _generation(w, na, plan, hw, na)
        st["generate"] = gen_t
        za3 = 3 if za >= 3 else 0
        zc3 = 3 if zc >= 3 else 0
        ta = _inference(a, w, na, za, hw, devices) + _inference(f, w, na, za3, hw, devices)
        tb = _inference(c, w, nb, zc, hw, devices) + (
            0.0 if w.rule_reward else _inference(r, w, nb, zc3, hw, devices)
        )
        st["infer"] = max(ta, tb)
        st["exchange"] = xfer_bytes / hw.bw_inter + (4 + na) * hw.alpha
        st["train"] = max(
            _train(a, w, na, za, mb, hw, devices), _train(c, w, nb, zc, mb, hw, devices)
        )
        mem["A"] = (
            _train_state_bytes(a.params, za, na)
            + BF16 * f.params / (na if za3 else 1)
            + _activation_bytes(a, mb, seq)
            + gen_mem
        )
        mem["B"] = (
            _train_state_bytes(c.params, zc, nb)
            + (0 if w.rule_reward else BF16 * r.params / (nb if zc3 else 1))
            + _activation_bytes(c, mb, seq)
        )
    else:
        ng = plan.split
        nt = devices - ng
        if not 1 <= ng < devices:
            raise ValueError(f"separate split must be in [1, {devices - 1}], got {ng}")
        if plan.gen == "tp" and (ng % plan.gen_tp or plan.gen_tp > hw.devices_per_node):
            raise ValueError(f"gen_tp={plan.gen_tp} must divide {ng} and fit in a node")
        gplan = plan if plan.gen == "tp" else replace(plan, gen="hybrid", zero_actor=0)
        gen_t, gen_mem = _generation(w, ng, gplan, hw, ng)
        st["generate"] = gen_t
        st["sync"] = collective_time("all_gather", BF16 * a.params, nt, hw) if za >= 3 else 0.0
        st["sync"] += collective_time(
            "broadcast", BF16 * a.params, 2, replace(hw, devices_per_node=1)
        )
        frozen_stage = 3 if za >= 3 else 0
        models = ((a, za), (f, frozen_stage), (c, zc)) + (
            () if w.rule_reward else ((r, frozen_stage),)
        )
        st["infer"] = sum(_inference(m, w, nt, z, hw, nt) for m, z in models)
        st["exchange"] = xfer_bytes / hw.bw_inter + (4 + ng) * hw.alpha
        st["train"] = _train(a, w, nt, za, mb, hw, nt) + _train(c, w, nt, zc, mb, hw, nt)
        fz = nt if frozen_stage >= 3 else 1
        mem["train"] = (
            _train_state_bytes(a.params, za, nt)
            + _train_state_bytes(c.params, zc, nt)
            + BF16 * f.params / fz
            + (0 if w.rule_reward else BF16 * r.params / fz)
            + _activation_bytes(a, mb, seq)
        )
        mem["gen"] = BF16 * a.params / (plan.gen_tp if plan.gen == "tp" else 1) + gen_mem
    total = sum(st.values())
    if plan.strategy == "separate" and plan.pipelined:
        total = max(st["generate"], total - st["generate"])
    fits = all(v <= hw.memory for v in mem.values())
    return StageCost(plan, devices, st, mem, fits, total)
