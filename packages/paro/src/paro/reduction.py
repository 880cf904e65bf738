"""Gradient reduction: per micro-step to level ``g`` (t_gradient) and at the boundary to level
``os`` (t_syncg), paper §3.5 and the dossier's §3.4 tables.

Autograd accumulates each micro-step's gradient into a full-size flat buffer whose views are the
parameters' ``.grad`` during :meth:`ParoDataParallel.backward`. :meth:`GradientReducer.end_micro`
then reduces it to the g-level accumulator (N: the full buffer itself, local sum; I: intra
reduce-scatter; G: intra then inter reduce-scatter, or one world reduce-scatter with
``global_comm="flat"``) and frees the full buffer. :meth:`GradientReducer.sync_to_os` performs
t_syncg (N→N all-reduce, N→I intra RS + inter AR, N→G intra RS + inter RS, I→I inter AR, I→G inter
RS); the caller divides by ``n·A`` once.
"""

from __future__ import annotations

import torch

from paro.gathering import ParameterBuffer, alloc_storage, free_storage
from paro.horing import hierarchical_all_reduce_, ho_ring_all_reduce_
from paro.layout import all_reduce, gather_into, reduce_scatter
from paro.strategy import Strategy

__all__ = ["GradientReducer"]


class GradientReducer:
    """The gradient buffers of one trainable :class:`ParameterBuffer` under ``strategy``."""

    def __init__(self, tb: ParameterBuffer, strategy: Strategy, global_comm: str) -> None:
        self.tb, self.s, self.global_comm = tb, strategy, global_comm
        self.pg = tb.pg
        self.full = torch.zeros(tb.padded, dtype=tb.dtype, device=tb.device)
        if strategy.g == "N":
            self.acc = self.full
        else:
            self.acc = self.full.new_zeros(tb.layout.shard_numel(strategy.g))
            free_storage(self.full)

    # ---- t_gradient
    def begin_micro(self) -> list[torch.Tensor]:
        """Allocate (g ≠ N: zero) the full gradient buffer; return the per-parameter views."""
        if self.s.g != "N":
            alloc_storage(self.full, self.tb.padded)
            self.full.zero_()
        return self.tb.views(self.full)

    def end_micro(self) -> None:
        """Reduce the micro-step's full gradient into the g-level accumulator, free the buffer."""
        s, pg, lay = self.s, self.pg, self.tb.layout
        if s.g == "N":
            return
        tmp = torch.empty_like(self.acc)
        if s.g == "I":
            reduce_scatter(tmp, lay.i_parts(self.full), pg.intra, lay.m)
        elif self.global_comm == "flat":
            reduce_scatter(tmp, lay.rank_parts(self.full), None, lay.n)
        else:
            ishard = self.full.new_empty(lay.g * lay.block)
            reduce_scatter(ishard, lay.i_parts(self.full), pg.intra, lay.m)
            reduce_scatter(tmp, lay.g_parts(ishard), pg.inter, lay.g)
        self.acc.add_(tmp)
        free_storage(self.full)

    def abort_micro(self) -> None:
        """Drop a micro-step whose backward failed (g ≠ N: its buffer; g = N: see engine)."""
        if self.s.g != "N":
            free_storage(self.full)

    # ---- t_syncg
    def sync_to_os(self) -> torch.Tensor:
        """Bring the accumulated gradient to the optimizer-state level (sums, not averaged)."""
        s, pg, lay = self.s, self.pg, self.tb.layout
        m, g, n = lay.m, lay.g, lay.n
        key = s.g + s.os
        grad = self.acc
        if key == "NN":
            if self.global_comm == "flat":
                all_reduce(grad, None, n)
            elif self.global_comm == "horing":
                if n > 1:
                    ho_ring_all_reduce_(grad, self.tb.pg.topology)
            else:
                hierarchical_all_reduce_(grad, pg)
            return grad
        if key in ("NI", "NG"):
            if key == "NG" and self.global_comm == "flat":
                out = grad.new_empty(lay.block)
                reduce_scatter(out, lay.rank_parts(grad), None, n)
                return out
            ishard = grad.new_empty(g * lay.block)
            reduce_scatter(ishard, lay.i_parts(grad), pg.intra, m)
            if key == "NI":
                all_reduce(ishard, pg.inter, g)
                return ishard
            out = grad.new_empty(lay.block)
            reduce_scatter(out, lay.g_parts(ishard), pg.inter, g)
            return out
        if key == "II":
            all_reduce(grad, pg.inter, g)
            return grad
        if key == "IG":
            out = grad.new_empty(lay.block)
            reduce_scatter(out, lay.g_parts(grad), pg.inter, g)
            return out
        return grad  # GG

    # ---- inspection (collective, leaves the accumulator untouched)
    def full_sum(self, synced: torch.Tensor | None) -> torch.Tensor:
        """The full gradient summed over ranks and micro-steps, padded (world collectives).

        ``synced`` is the os-level gradient when t_syncg already ran (after clipping).
        """
        lay, pg = self.tb.layout, self.pg
        out = self.acc.new_zeros(lay.padded)
        if synced is not None:
            gather_into(out, synced.clone(), self.s.os, lay, pg, "hier")
            return out
        if self.s.g == "N":
            out.copy_(self.acc)
            all_reduce(out, None, lay.n)
        elif self.s.g == "I":
            ishard = self.acc.clone()
            all_reduce(ishard, pg.inter, lay.g)
            gather_into(out, ishard, "I", lay, pg, "hier")
        else:
            gather_into(out, self.acc.clone(), "G", lay, pg, "hier")
        return out

    def zero(self) -> None:
        self.acc.zero_()

    def acc_bytes(self) -> int:
        return self.acc.numel() * self.acc.element_size()
