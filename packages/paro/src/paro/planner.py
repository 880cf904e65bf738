"""Strategy selection guideline (paper §3.6 / NeurIPS "guideline ... based on quantitative calculations").

Enumerate the candidate strategies, drop those whose per-rank memory exceeds the limit, and rank
the rest by the predicted step time of :func:`paro.cost.estimate_step` (ties: less memory first).
With a slow inter-group network this reproduces the paper's narrative: NIG when it fits, else IIG,
else IGG, else ZeRO-3; ING for parameter-efficient fine-tuning. Note (dossier §3.4): ZeRO-1 (NNG)
moves no more inter-group bytes than NIG, so when it fits and is a candidate it can win on time
alone; the paper did not compare against it. The default candidates are the paper's ten strategies.
"""

from __future__ import annotations

from dataclasses import dataclass

from paro.cost import Memory, ModelStates, StepEstimate, estimate_step, memory
from paro.strategy import PAPER_STRATEGIES, Strategy
from paro.topology import Links, Topology

__all__ = ["PlanRow", "choose", "format_table", "plan"]


@dataclass(frozen=True)
class PlanRow:
    """One candidate: its memory, predicted time, and whether it fits."""

    strategy: Strategy
    memory: Memory
    estimate: StepEstimate
    fits: bool

    @property
    def total_memory(self) -> int:
        return self.memory.total


def plan(
    states: ModelStates,
    topo: Topology,
    links: Links,
    memory_limit: float,
    accum_steps: int = 1,
    *,
    compute_s: float = 0.0,
    activation_bytes: float = 0.0,
    candidates: tuple[str, ...] = PAPER_STRATEGIES,
    global_comm: str = "hier",
    baseline_global_comm: str = "flat",
) -> list[PlanRow]:
    """Rank ``candidates`` for this model and cluster: fitting ones first, fastest first.

    ``memory_limit`` is the bytes a rank may use; ``activation_bytes`` is added to every
    strategy's model states. ZeRO-style strategies (NNN, NNG, NGG, GGG) are costed with
    ``baseline_global_comm`` (the flat NCCL rings of the paper's baselines), the others with
    ``global_comm`` (PaRO-CC).
    """
    if not memory_limit > 0:
        raise ValueError(f"memory_limit must be > 0 bytes, got {memory_limit}")
    if activation_bytes < 0:
        raise ValueError(f"activation_bytes must be >= 0, got {activation_bytes}")
    if not candidates:
        raise ValueError("candidates must name at least one strategy")
    rows = []
    for name in candidates:
        s = Strategy.parse(name)
        mode = baseline_global_comm if s.name in ("NNN", "NNG", "NGG", "GGG") else global_comm
        mem = memory(s, topo, states)
        est = estimate_step(
            s, topo, states, links, accum_steps, compute_s=compute_s, global_comm=mode
        )
        rows.append(PlanRow(s, mem, est, mem.total + activation_bytes <= memory_limit))
    rows.sort(key=lambda r: (not r.fits, r.estimate.total, r.total_memory))
    return rows


def _gb(x: float) -> str:
    return f"{x / 1e9:8.2f}"


def format_table(rows: list[PlanRow]) -> str:
    """A text table of :func:`plan` rows (GB = 1e9 bytes, seconds)."""
    head = (
        f"{'rank':>4} {'strategy':<8} {'system':<20} {'params':>8} {'grads':>8} {'optim':>8} "
        f"{'total':>8} {'fits':>4} {'t_param':>8} {'t_grad':>8} {'t_syncg':>8} {'t_syncp':>8} "
        f"{'T_step':>8}"
    )
    lines = [head, "-" * len(head)]
    for i, r in enumerate(rows, 1):
        e = r.estimate
        lines.append(
            f"{i:>4} {r.strategy.name:<8} {r.strategy.system:<20} {_gb(r.memory.params)} "
            f"{_gb(r.memory.grads)} {_gb(r.memory.optimizer_states)} {_gb(r.total_memory)} "
            f"{'yes' if r.fits else 'OOM':>4} {e.t_param:8.3f} {e.t_gradient:8.3f} "
            f"{e.t_syncg:8.3f} {e.t_syncp:8.3f} {e.total:8.3f}"
        )
    return "\n".join(lines)


def choose(
    states: ModelStates,
    topo: Topology,
    links: Links,
    memory_limit: float,
    accum_steps: int = 1,
    **kwargs,
) -> PlanRow:
    """The best fitting strategy of :func:`plan`; ``ValueError`` when none fits the memory limit."""
    rows = plan(states, topo, links, memory_limit, accum_steps, **kwargs)
    if not rows[0].fits:
        least = min(rows, key=lambda r: r.total_memory)
        raise ValueError(
            f"no candidate strategy fits {memory_limit / 1e9:.2f} GB per rank; the smallest, "
            f"{least.strategy.name}, needs {least.total_memory / 1e9:.2f} GB of model states: "
            "add ranks, shrink the model or raise the limit"
        )
    return rows[0]
