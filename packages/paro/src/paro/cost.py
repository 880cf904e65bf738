"""Cost model: per-rank memory and per-step communication of every strategy (paper §3.3–§3.4).

Memory (model states, per rank; ``d_N = 1, d_I = m, d_G = n``)::

    Mem(p, g, os) = Bp·Ψ/d_p + Bg·Ψ'/d_g + Bos·Ψ'/d_os

with Ψ all parameters, Ψ' the trainable ones, and byte widths ``Bp, Bg, Bos`` (the paper's
mixed-precision Adam: 2, 2, 12; this package's fp32 engine with Adam: 4, 4, 8). Flat buffers are
padded to a multiple of ``n`` so every shard has the same size; the model counts the padding.

Communication, per global step of ``A`` micro-steps (the paper's t_param, t_gradient, t_syncg,
t_syncp tables, reconstructed in the dossier §3.4)::

    T = A·(t_compute + t_param + t_gradient) + t_syncg + t_syncp

Every collective is listed as a :class:`PlannedComm` with its scope (``intra``: inside a group;
``inter``: across groups among ranks with the same local index; ``global``: a flat collective
over all ranks) and the bytes one rank sends under the ring algorithms
(all-gather/reduce-scatter ``(k-1)/k·S``, all-reduce ``2(k-1)/k·S`` for ``S`` bytes of full data over
``k`` ranks), the same model as :meth:`shared.CommOp.ring_bytes`. With ``global_comm="hier"`` a
global collective is done the PaRO-CC way: reduce-scatter = intra then inter, all-gather = inter
then intra, all-reduce = intra RS, inter AR on 1/m, intra AG (HO-Ring).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paro.strategy import Strategy
from paro.topology import Links, Topology

__all__ = [
    "GLOBAL_COMM",
    "CommVolume",
    "Memory",
    "ModelStates",
    "PlannedComm",
    "StepEstimate",
    "allreduce_volume",
    "comm_plan",
    "comm_volume",
    "estimate_step",
    "memory",
    "padded",
]

GLOBAL_COMM = ("hier", "horing", "flat")


def padded(numel: int, multiple: int) -> int:
    """``numel`` rounded up to a multiple of ``multiple``."""
    return -(-numel // multiple) * multiple


@dataclass(frozen=True)
class ModelStates:
    """Sizes of the model states: element counts and byte widths.

    ``numel`` is the trainable element count Ψ', ``frozen_numel`` the frozen one (Ψ = Ψ' + frozen);
    ``os_bytes`` is optimizer-state bytes per trainable element (Adam fp32 m and v: 8; the paper's
    mixed precision fp32 master + m + v: 12; SGD without momentum: 0).
    """

    numel: int
    frozen_numel: int = 0
    param_bytes: int = 4
    grad_bytes: int = 4
    os_bytes: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.numel, int) or self.numel < 1:
            raise ValueError(
                f"numel (trainable elements) must be a positive int, got {self.numel!r}"
            )
        for name in ("frozen_numel", "os_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        for name in ("param_bytes", "grad_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")

    @classmethod
    def mixed_precision(cls, params: float, trainable_fraction: float = 1.0) -> ModelStates:
        """The paper's accounting: bf16 params and grads, 12 bytes of fp32 Adam state (§3.3)."""
        if not 0 < trainable_fraction <= 1:
            raise ValueError(f"trainable_fraction must be in (0, 1], got {trainable_fraction}")
        total = int(params)
        trainable = max(1, round(total * trainable_fraction))
        return cls(trainable, total - trainable, 2, 2, 12)


def _div(level: str, topo: Topology) -> int:
    return {"N": 1, "I": topo.m, "G": topo.n}[level]


@dataclass(frozen=True)
class Memory:
    """Per-rank bytes of parameters, gradients and optimizer states."""

    params: int
    grads: int
    optimizer_states: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer_states


def memory(strategy: Strategy | str, topo: Topology, states: ModelStates) -> Memory:
    """Per-rank model-state bytes of ``strategy`` (§3.3), counting padding to multiples of ``n``."""
    s = Strategy.parse(strategy)
    pt, pf = padded(states.numel, topo.n), padded(states.frozen_numel, topo.n)
    return Memory(
        params=(pt + pf) * states.param_bytes // _div(s.p, topo),
        grads=pt * states.grad_bytes // _div(s.g, topo),
        optimizer_states=pt * states.os_bytes // _div(s.os, topo),
    )


@dataclass(frozen=True)
class PlannedComm:
    """One collective of a step: ``count`` times per global step, ``wire_bytes`` sent per rank each."""

    phase: str  # "param" | "grad" | "syncg" | "syncp"
    op: str  # "all_gather" | "reduce_scatter" | "all_reduce"
    scope: str  # "intra" | "inter" | "global"
    full_bytes: int  # S: bytes of the full (gathered / unreduced) data of this collective
    group_size: int
    count: int

    @property
    def wire_bytes(self) -> int:
        k, s = self.group_size, self.full_bytes
        if k <= 1:
            return 0
        if self.op == "all_reduce":
            return 2 * (k - 1) * s // k
        return (k - 1) * s // k

    @property
    def total_wire_bytes(self) -> int:
        return self.wire_bytes * self.count


@dataclass(frozen=True)
class CommVolume:
    """Bytes one rank sends per global step, by scope (ring model)."""

    intra: int
    inter: int
    global_: int = 0
    ops: tuple[PlannedComm, ...] = field(default=(), compare=False)

    @property
    def total(self) -> int:
        return self.intra + self.inter + self.global_


def _check_comm(global_comm: str, accum_steps: int) -> None:
    if global_comm not in GLOBAL_COMM:
        raise ValueError(f"global_comm must be one of {GLOBAL_COMM}, got {global_comm!r}")
    if not isinstance(accum_steps, int) or accum_steps < 1:
        raise ValueError(f"accum_steps must be a positive int, got {accum_steps!r}")


def _gather(phase: str, s: int, topo: Topology, count: int, level: str, mode: str):
    if level == "I":
        return [PlannedComm(phase, "all_gather", "intra", s, topo.m, count)]
    if level == "G":
        if mode == "flat":
            return [PlannedComm(phase, "all_gather", "global", s, topo.n, count)]
        return [
            PlannedComm(phase, "all_gather", "inter", s // topo.m, topo.g, count),
            PlannedComm(phase, "all_gather", "intra", s, topo.m, count),
        ]
    return []


def comm_plan(
    strategy: Strategy | str,
    topo: Topology,
    states: ModelStates,
    accum_steps: int = 1,
    *,
    reshard_after_forward: bool = True,
    global_comm: str = "hier",
) -> list[PlannedComm]:
    """Every collective of one global step of ``strategy`` (§3.4, dossier tables), in issue order.

    ``reshard_after_forward``: sharded parameters are freed after forward and gathered again for
    backward (two all-gathers per micro-step, as ZeRO-3/FSDP and the paper's t_param); otherwise
    one. ``global_comm``: ``"hier"``/``"horing"`` (PaRO-CC; the same bytes) or ``"flat"``.
    """
    s = Strategy.parse(strategy)
    _check_comm(global_comm, accum_steps)
    a = accum_steps
    sp = padded(states.numel, topo.n) * states.param_bytes
    sf = padded(states.frozen_numel, topo.n) * states.param_bytes
    sg = padded(states.numel, topo.n) * states.grad_bytes
    flat = global_comm == "flat"
    plan: list[PlannedComm] = []
    gathers = a * (2 if reshard_after_forward else 1)
    for size in (sp, sf):
        if size:
            plan += _gather("param", size, topo, gathers, s.p, global_comm)
    if s.g == "I":
        plan.append(PlannedComm("grad", "reduce_scatter", "intra", sg, topo.m, a))
    elif s.g == "G":
        if flat:
            plan.append(PlannedComm("grad", "reduce_scatter", "global", sg, topo.n, a))
        else:
            plan.append(PlannedComm("grad", "reduce_scatter", "intra", sg, topo.m, a))
            plan.append(PlannedComm("grad", "reduce_scatter", "inter", sg // topo.m, topo.g, a))
    # t_syncg: (g, os)
    m, g = topo.m, topo.g
    key = s.g + s.os
    if key == "NN":
        if flat:
            plan.append(PlannedComm("syncg", "all_reduce", "global", sg, topo.n, 1))
        else:
            plan.append(PlannedComm("syncg", "reduce_scatter", "intra", sg, m, 1))
            plan.append(PlannedComm("syncg", "all_reduce", "inter", sg // m, g, 1))
            plan.append(PlannedComm("syncg", "all_gather", "intra", sg, m, 1))
    elif key == "NI":
        plan.append(PlannedComm("syncg", "reduce_scatter", "intra", sg, m, 1))
        plan.append(PlannedComm("syncg", "all_reduce", "inter", sg // m, g, 1))
    elif key == "NG":
        if flat:
            plan.append(PlannedComm("syncg", "reduce_scatter", "global", sg, topo.n, 1))
        else:
            plan.append(PlannedComm("syncg", "reduce_scatter", "intra", sg, m, 1))
            plan.append(PlannedComm("syncg", "reduce_scatter", "inter", sg // m, g, 1))
    elif key == "II":
        plan.append(PlannedComm("syncg", "all_reduce", "inter", sg // m, g, 1))
    elif key == "IG":
        plan.append(PlannedComm("syncg", "reduce_scatter", "inter", sg // m, g, 1))
    # t_syncp: (p, os)
    key = s.p + s.os
    if key == "NI":
        plan.append(PlannedComm("syncp", "all_gather", "intra", sp, m, 1))
    elif key == "NG":
        plan += _gather("syncp", sp, topo, 1, "G", global_comm)
    elif key == "IG":
        plan.append(PlannedComm("syncp", "all_gather", "inter", sp // m, g, 1))
    return plan


def comm_volume(
    strategy: Strategy | str,
    topo: Topology,
    states: ModelStates,
    accum_steps: int = 1,
    *,
    reshard_after_forward: bool = True,
    global_comm: str = "hier",
) -> CommVolume:
    """Bytes one rank sends per global step, split intra / inter / global (ring model)."""
    plan = comm_plan(
        strategy,
        topo,
        states,
        accum_steps,
        reshard_after_forward=reshard_after_forward,
        global_comm=global_comm,
    )
    tot = {"intra": 0, "inter": 0, "global": 0}
    for op in plan:
        tot[op.scope] += op.total_wire_bytes
    return CommVolume(tot["intra"], tot["inter"], tot["global"], tuple(plan))


def _op_time(op: PlannedComm, topo: Topology, links: Links) -> float:
    k = op.group_size
    if k <= 1:
        return 0.0
    steps = (2 if op.op == "all_reduce" else 1) * (k - 1)
    if op.scope == "intra":
        return op.wire_bytes / links.bw_intra + steps * links.latency_intra
    if op.scope == "inter":
        # the m inter rings run concurrently; on a shared link they split its bandwidth
        bw = links.bw_inter / (topo.m if links.inter_shared else 1)
        return op.wire_bytes / bw + steps * links.latency_inter
    # flat ring over all ranks: every step waits for the slowest (inter-group) hop
    lat = max(links.latency_intra, links.latency_inter)
    return op.wire_bytes / min(links.bw_inter, links.bw_intra) + steps * lat


@dataclass(frozen=True)
class StepEstimate:
    """Predicted seconds per global step: compute plus the four communication terms (§3.4)."""

    compute: float
    t_param: float
    t_gradient: float
    t_syncg: float
    t_syncp: float

    @property
    def comm(self) -> float:
        return self.t_param + self.t_gradient + self.t_syncg + self.t_syncp

    @property
    def total(self) -> float:
        return self.compute + self.comm


def estimate_step(
    strategy: Strategy | str,
    topo: Topology,
    states: ModelStates,
    links: Links,
    accum_steps: int = 1,
    *,
    compute_s: float = 0.0,
    reshard_after_forward: bool = True,
    global_comm: str = "hier",
) -> StepEstimate:
    """``T = A·(t_compute + t_param + t_gradient) + t_syncg + t_syncp``, no overlap credited.

    ``compute_s`` is the compute time of one micro-step.
    """
    if compute_s < 0:
        raise ValueError(f"compute_s must be >= 0, got {compute_s}")
    plan = comm_plan(
        strategy,
        topo,
        states,
        accum_steps,
        reshard_after_forward=reshard_after_forward,
        global_comm=global_comm,
    )
    t = {"param": 0.0, "grad": 0.0, "syncg": 0.0, "syncp": 0.0}
    for op in plan:
        t[op.phase] += op.count * _op_time(op, topo, links)
    return StepEstimate(accum_steps * compute_s, t["param"], t["grad"], t["syncg"], t["syncp"])


def allreduce_volume(nbytes: int, topo: Topology, algorithm: str = "horing") -> dict[str, float]:
    """Bytes crossing from one group to the next (per direction) and per-rank intra/inter bytes.

    For ``S`` bytes, ``n`` ranks, ``m`` per group, ``g`` groups (dossier §3.7):

    - ``"flat"`` ring in rank order: each rank sends ``2(n-1)/n·S``; only the last local rank of a
      group sends across, so one group boundary carries ``2(n-1)/n·S`` per direction.
    - ``"horing"``: intra RS ``(m-1)/m·S`` + inter AR ``2(g-1)/g·S/m`` + intra AG ``(m-1)/m·S`` per
      rank; a group's ``m`` inter rings send ``2(g-1)/g·S`` across its boundary in all.
    """
    n, m, g = topo.n, topo.m, topo.g
    s = float(nbytes)
    if algorithm == "flat":
        per_rank = 2 * (n - 1) / n * s
        return {"per_rank": per_rank, "boundary": per_rank if g > 1 else 0.0}
    if algorithm == "horing":
        intra = 2 * (m - 1) / m * s
        inter = 2 * (g - 1) / g * s / m
        return {
            "per_rank": intra + inter,
            "per_rank_intra": intra,
            "per_rank_inter": inter,
            "boundary": inter * m,
        }
    raise ValueError(f"algorithm must be 'flat' or 'horing', got {algorithm!r}")
