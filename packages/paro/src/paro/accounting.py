"""Measured communication, classified the way the cost model counts it.

:func:`shared.record_comm` records every op a rank issues; :func:`scope_bytes` sums each op's
ring-model wire bytes (:meth:`shared.CommOp.ring_bytes`) by scope:

- ``intra``: a collective whose ranks all sit in one group, or a send to a rank of the same group;
- ``inter``: a collective over ranks in distinct groups (one per group: an inter ring), or a send
  to another group;
- ``global``: a collective over ranks spanning groups with several ranks per group (flat ring).
"""

from __future__ import annotations

from paro.topology import Topology
from shared import CommLog

__all__ = ["scope_bytes", "scope_of"]


def scope_of(ranks: tuple[int, ...], topo: Topology) -> str:
    """``"intra"``, ``"inter"`` or ``"global"`` for a collective over global ``ranks``."""
    groups = [topo.group_of(r) for r in ranks]
    if len(set(groups)) == 1:
        return "intra"
    if len(set(groups)) == len(groups):
        return "inter"
    return "global"


def scope_bytes(log: CommLog, topo: Topology) -> dict[str, int]:
    """Ring-model bytes this rank sent, by scope, over the ops in ``log`` (barriers excluded)."""
    out = {"intra": 0, "inter": 0, "global": 0}
    for op in log.ops:
        if op.kind in ("recv", "irecv", "barrier"):
            continue
        if op.kind in ("send", "isend"):
            scope = "intra" if topo.same_group(op.rank, op.peer) else "inter"
        elif op.group_size <= 1:
            continue
        else:
            scope = scope_of(op.group_ranks, topo)
        wire = op.ring_bytes()
        if wire != int(wire):
            raise ValueError(f"non-integral ring bytes {wire} for {op}")
        out[scope] += int(wire)
    return out
