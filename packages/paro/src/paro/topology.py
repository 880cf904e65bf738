"""Cluster shape and the process groups PaRO uses (paper §3: "group" = the ranks of one node).

Rank ``r`` sits in group ``r // m`` at local index ``r % m`` (``m`` = group size, ``g = n / m``
groups). The intra group of a rank is its node; its inter group links the ranks with the same local
index on every node, the rings HO-Ring runs concurrently (one per local index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Links", "ParoGroups", "Topology", "build_groups"]


@dataclass(frozen=True)
class Topology:
    """``world_size`` ranks (n) in groups of ``group_size`` (m); ``num_groups`` = g = n / m."""

    world_size: int
    group_size: int

    def __post_init__(self) -> None:
        for name, v in (("world_size", self.world_size), ("group_size", self.group_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.world_size % self.group_size:
            raise ValueError(
                f"group_size={self.group_size} does not divide world_size={self.world_size}: "
                "PaRO groups must all have the same number of ranks (pick a divisor, e.g. the "
                "number of GPUs per node)"
            )

    @property
    def n(self) -> int:
        return self.world_size

    @property
    def m(self) -> int:
        return self.group_size

    @property
    def num_groups(self) -> int:
        return self.world_size // self.group_size

    @property
    def g(self) -> int:
        return self.num_groups

    def group_of(self, rank: int) -> int:
        """Index of the group (node) holding ``rank``."""
        self._check_rank(rank)
        return rank // self.group_size

    def local_rank(self, rank: int) -> int:
        """Index of ``rank`` inside its group."""
        self._check_rank(rank)
        return rank % self.group_size

    def intra_ranks(self, rank: int) -> tuple[int, ...]:
        k = self.group_of(rank)
        return tuple(range(k * self.m, (k + 1) * self.m))

    def inter_ranks(self, rank: int) -> tuple[int, ...]:
        return tuple(range(self.local_rank(rank), self.n, self.m))

    def same_group(self, a: int, b: int) -> bool:
        return self.group_of(a) == self.group_of(b)

    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside [0, {self.world_size})")


@dataclass(frozen=True)
class Links:
    """Bandwidths (bytes/s) and per-message latencies (s) of the two network tiers.

    ``bw_intra`` is what one rank gets inside its group (NVLink/loopback). ``bw_inter`` is what one
    rank gets across groups; with ``inter_shared=True`` the ``m`` ranks of a group share one link
    of ``bw_inter`` (one NIC per node, as in the two-node emulation), so ``m`` concurrent inter
    rings each get ``bw_inter / m``. A flat ring crosses each group boundary with one flow.
    """

    bw_intra: float
    bw_inter: float
    inter_shared: bool = False
    latency_intra: float = 0.0
    latency_inter: float = 0.0

    def __post_init__(self) -> None:
        for name in ("bw_intra", "bw_inter"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number of bytes/s, got {v!r}")
        for name in ("latency_intra", "latency_inter"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {v!r}")


@dataclass(frozen=True)
class ParoGroups:
    """The live process groups of one rank: its intra group, its inter group and the world."""

    topology: Topology
    rank: int
    intra: Any
    inter: Any
    intra_ranks: tuple[int, ...]
    inter_ranks: tuple[int, ...]

    @property
    def local_rank(self) -> int:
        return self.rank % self.topology.m

    @property
    def group_index(self) -> int:
        return self.rank // self.topology.m


def build_groups(group_size: int) -> ParoGroups:
    """Create the intra/inter groups for ``group_size`` ranks per group (collective call).

    Uses :func:`shared.make_node_groups`; raises ``ValueError`` when ``group_size`` does not divide
    the world size.
    """
    import torch.distributed as dist

    from shared import make_node_groups

    if not dist.is_initialized():
        raise RuntimeError("build_groups needs an initialised torch.distributed process group")
    topo = Topology(dist.get_world_size(), group_size)
    ng = make_node_groups(group_size)
    return ParoGroups(topo, dist.get_rank(), ng.intra, ng.inter, ng.intra_ranks, ng.inter_ranks)
