"""The flat-buffer slice layout shared by every strategy, and the collective wrappers (dossier §5.3).

Trainable parameters are flattened (in ``module.parameters()`` order) into one buffer padded to a
multiple of ``n`` and cut into ``n`` blocks of ``b`` elements. Rank ``r = k·m + l`` (group ``k``,
local index ``l``) owns the buffer's block ``l·g + k``: the buffer stores blocks in ``[l][k]`` order,
so the *intra* (I) shard of local index ``l`` (the strided union of the blocks of ranks
``{l, l+m, l+2m, ...}``, the official branch's layout) and a *global* (G) shard are both contiguous
slices, and every I↔G switch is a single inter-group collective over the ranks that share ``l``.

Everything here is pure arithmetic on sizes plus thin wrappers over ``torch.distributed`` that skip
collectives of one rank.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from paro.cost import padded

__all__ = ["LEVELS", "Layout", "all_gather", "all_reduce", "reduce_scatter", "ring_reduce_scatter"]

LEVELS = ("N", "I", "G")


class Layout:
    """Sizes and slices of one flat buffer of ``numel`` elements on ``n`` ranks in groups of ``m``."""

    def __init__(self, numel: int, n: int, m: int) -> None:
        if n < 1 or m < 1 or n % m:
            raise ValueError(f"group size m={m} must divide the world size n={n}")
        self.numel, self.n, self.m, self.g = numel, n, m, n // m
        self.padded = padded(numel, n)
        self.block = self.padded // n

    def shard_range(self, level: str, rank: int) -> tuple[int, int]:
        """Buffer positions ``[start, end)`` that ``rank`` keeps at ``level`` (N, I or G)."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if not 0 <= rank < self.n:
            raise ValueError(f"rank {rank} outside a world of {self.n}")
        k, li = divmod(rank, self.m)
        ib = self.g * self.block
        if level == "N":
            return 0, self.padded
        if level == "I":
            return li * ib, (li + 1) * ib
        start = li * ib + k * self.block
        return start, start + self.block

    def shard_numel(self, level: str) -> int:
        return {"N": self.padded, "I": self.g * self.block, "G": self.block}[level]

    # ---- views of full-size / I-size tensors used by the collectives
    def i_view(self, t: torch.Tensor, local: int) -> torch.Tensor:
        """The I-shard (local index ``local``) of a full-size buffer ``t``."""
        ib = self.g * self.block
        return t[local * ib : (local + 1) * ib]

    def i_parts(self, t: torch.Tensor) -> list[torch.Tensor]:
        """The ``m`` I-shards of a full buffer, in intra-group rank order."""
        return list(t.view(self.m, self.g * self.block).unbind(0))

    def g_parts(self, ishard: torch.Tensor) -> list[torch.Tensor]:
        """The ``g`` G-blocks of an I-shard, in inter-group rank order."""
        return list(ishard.view(self.g, self.block).unbind(0))

    def rank_parts(self, t: torch.Tensor) -> list[torch.Tensor]:
        """The ``n`` G-blocks of a full buffer in global rank order (for flat collectives)."""
        v = t.view(self.m, self.g, self.block)
        return [v[r % self.m, r // self.m] for r in range(self.n)]


def all_gather(outs: list[torch.Tensor], inp: torch.Tensor, group: Any, size: int) -> None:
    """List-form all-gather (a copy for one rank); ``inp`` may alias one of ``outs``."""
    if size == 1:
        outs[0].copy_(inp)
        return
    dist.all_gather(outs, inp.clone(), group=group)


def reduce_scatter(out: torch.Tensor, ins: list[torch.Tensor], group: Any, size: int) -> None:
    """Sum reduce-scatter (a copy for one rank)."""
    if size == 1:
        out.copy_(ins[0])
        return
    dist.reduce_scatter(out, ins, group=group)


def ring_reduce_scatter(
    out: torch.Tensor,
    flat: torch.Tensor,
    parts: list[torch.Tensor],
    ranks: tuple[int, ...],
    inplace: bool = False,
) -> None:
    """Sum reduce-scatter with paro's point-to-point ring (``size - 1`` steps of one part each:
    the ring model's ``(k-1)/k·S`` per rank). ``parts`` are views of the contiguous 1-D ``flat``,
    part ``i`` ending on ring member ``ranks[i]`` (global ranks). Gloo's own reduce-scatter puts
    about twice these bytes on the wire (measured: ``python -m paro bench``, emulation details).
    ``inplace`` lets ``flat`` hold partial sums afterwards (else a copy is reduced)."""
    from paro.horing import ring_reduce_scatter_

    k = len(ranks)
    if k == 1:
        out.copy_(parts[0])
        return
    base, size = flat.data_ptr(), flat.element_size()
    bounds = [
        ((p.data_ptr() - base) // size, (p.data_ptr() - base) // size + p.numel()) for p in parts
    ]
    work = flat if inplace else flat.clone()
    ring_reduce_scatter_(work, ranks, bounds)
    lo, hi = bounds[ranks.index(dist.get_rank())]
    out.copy_(work[lo:hi])


def all_reduce(t: torch.Tensor, group: Any, size: int, op: Any = None) -> None:
    """In-place all-reduce (sum unless ``op``), nothing for one rank."""
    if size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op, group=group)


def gather_into(
    full: torch.Tensor, shard: torch.Tensor, level: str, lay: Layout, pg: Any, global_comm: str
) -> None:
    """All-gather a level-``level`` shard into the full-size ``full`` (t_param / t_syncp shape).

    I: intra all-gather; G: inter then intra all-gather (``global_comm="flat"``: one world
    all-gather); N: a copy.
    """
    if level == "N":
        if shard.data_ptr() != full.data_ptr():
            full.copy_(shard)
    elif level == "I":
        all_gather(lay.i_parts(full), shard, pg.intra, lay.m)
    elif global_comm == "flat":
        all_gather(lay.rank_parts(full), shard, None, lay.n)
    else:
        ishard = full.new_empty(lay.g * lay.block)
        all_gather(lay.g_parts(ishard), shard, pg.inter, lay.g)
        all_gather(lay.i_parts(full), ishard, pg.intra, lay.m)
