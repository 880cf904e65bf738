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
from paro.layout import all_reduce, gather_into, reduce_scatter, ring_reduce_scatter
from paro.strategy import Strategy

__all__ = ["GradientReducer"]


class GradientReducer:
    """The gradient buffers of one trainable :class:`ParameterBuffer` under ``strategy``."""

    def __init__(
        self, tb: ParameterBuffer, strategy: Strategy, global_comm: str, ring_rs: bool = False
    ) -> None:
        self.tb, self.s, self.global_comm = tb, strategy, global_comm
        self.ring_rs = ring_rs  # intra / inter reduce-scatters as paro's point-to-point ring
        self.pg = tb.pg
        self.meter = tb.meter
        self.full = torch.zeros(tb.padded, dtype=tb.dtype, device=tb.device)
        self.active = False  # g ≠ N: the full buffer is allocated for the current micro-step
        if strategy.g == "N":
            self.acc = self.full
        else:
            self.acc = self.full.new_zeros(tb.layout.shard_numel(strategy.g))
            free_storage(self.full)

    # ---- t_gradient
    def begin_micro(self) -> list[torch.Tensor]:
        """Allocate (g ≠ N: zero) the full gradient buffer; return the per-parameter views."""
        if self.s.g != "N" and not self.active:
            alloc_storage(self.full, self.tb.padded)
            self.meter.add(self._full_bytes())
            self.active = True
            self.full.zero_()
        return self.tb.views(self.full)

    def _full_bytes(self) -> int:
        return self.tb.padded * self.full.element_size()

    def end_micro(self) -> None:
        """Reduce the micro-step's full gradient into the g-level accumulator, free the buffer.

        Safe to run on another thread than autograd's (the per-layer engine's communication
        thread) once the micro-step's gradients of this buffer are complete."""
        s, lay = self.s, self.tb.layout
        if s.g == "N":
            return
        if not self.active:  # nothing accumulated (a buffer whose parameters got no gradient)
            self.begin_micro()
        tmp = torch.empty_like(self.acc)
        if s.g == "I":
            self._rs_intra(tmp, self.full, inplace=True)
        elif self.global_comm == "flat":
            reduce_scatter(tmp, lay.rank_parts(self.full), None, lay.n)
        else:
            ishard = self.full.new_empty(lay.g * lay.block)
            self._rs_intra(ishard, self.full, inplace=True)
            self._rs_inter(tmp, ishard, inplace=True)
        self.acc.add_(tmp)
        self._free()

    def _free(self) -> None:
        if self.active:
            free_storage(self.full)
            self.meter.sub(self._full_bytes())
            self.active = False

    def _rs_intra(self, out: torch.Tensor, t: torch.Tensor, inplace: bool = False) -> None:
        """Full-size ``t`` -> this rank's I-shard (sum over the intra group)."""
        lay, pg = self.tb.layout, self.pg
        if self.ring_rs and lay.m > 1:
            ring_reduce_scatter(out, t, lay.i_parts(t), tuple(pg.intra_ranks), inplace)
        else:
            reduce_scatter(out, lay.i_parts(t), pg.intra, lay.m)

    def _rs_inter(self, out: torch.Tensor, ishard: torch.Tensor, inplace: bool = False) -> None:
        """I-shard ``ishard`` -> this rank's G-block (sum over the inter group)."""
        lay, pg = self.tb.layout, self.pg
        if self.ring_rs and lay.g > 1:
            ring_reduce_scatter(out, ishard, lay.g_parts(ishard), tuple(pg.inter_ranks), inplace)
        else:
            reduce_scatter(out, lay.g_parts(ishard), pg.inter, lay.g)

    def abort_micro(self) -> None:
        """Drop a micro-step whose backward failed (g ≠ N: its buffer; g = N: see engine)."""
        if self.s.g != "N":
            self._free()

    # ---- t_syncg
    def sync_to_os(self) -> torch.Tensor:
        """Bring the accumulated gradient to the optimizer-state level (sums, not averaged)."""
        s, pg, lay = self.s, self.pg, self.tb.layout
        g, n = lay.g, lay.n
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
            self._rs_intra(ishard, grad)
            if key == "NI":
                all_reduce(ishard, pg.inter, g)
                return ishard
            out = grad.new_empty(lay.block)
            self._rs_inter(out, ishard, inplace=True)
            return out
        if key == "II":
            all_reduce(grad, pg.inter, g)
            return grad
        if key == "IG":
            out = grad.new_empty(lay.block)
            self._rs_inter(out, grad)
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
