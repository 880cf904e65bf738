"""Parameter gathering and release (t_param, paper §3.5) with safe module views.

One :class:`ParameterBuffer` holds a list of module parameters (the trainable ones, or the frozen
ones) as one flat padded buffer. It keeps the persistent shard of level ``p`` (full / I-shard /
G-shard, :class:`paro.layout.Layout`); :meth:`ParameterBuffer.gather` all-gathers it into the full
buffer and binds the module's parameters to views of it, :meth:`ParameterBuffer.release` turns
them back into sharded placeholders (:mod:`paro.views`) and frees the full buffer's storage.
"""

from __future__ import annotations

import threading

import torch
import torch.distributed as dist
from torch import nn

from paro.layout import Layout, gather_into
from paro.topology import ParoGroups
from paro.views import set_gathered, set_sharded

__all__ = ["MemoryMeter", "ParameterBuffer"]


class MemoryMeter:
    """Exact accounting of an engine's transient full-size buffers: gathered parameter buffers
    (p ≠ N) and per-micro-step full gradient buffers (g ≠ N), in bytes, now and at peak.

    Persistent state (shards, the g-level accumulator, optimizer states) is
    :meth:`ParoDataParallel.state_bytes`; shard-sized temporaries of the collectives are not
    counted. Thread-safe (the per-layer engine's communication thread allocates and frees too).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.current += nbytes
            self.peak = max(self.peak, self.current)

    def sub(self, nbytes: int) -> None:
        with self._lock:
            self.current -= nbytes

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.current


def free_storage(t: torch.Tensor) -> None:
    t.untyped_storage().resize_(0)


def alloc_storage(t: torch.Tensor, numel: int) -> None:
    storage = t.untyped_storage()
    need = numel * t.element_size()
    if storage.nbytes() != need:
        storage.resize_(need)


class ParameterBuffer:
    """Flat buffer of ``params`` sharded at ``level`` over ``pg`` (N keeps it whole)."""

    def __init__(
        self,
        params: list[nn.Parameter],
        names: list[str],
        level: str,
        pg: ParoGroups,
        strategy: str,
        dtype: torch.dtype | None = None,
        meter: MemoryMeter | None = None,
    ) -> None:
        self.params = params
        self.meter = meter or MemoryMeter()
        self.names = names
        self.level = level
        self.pg = pg
        self.strategy = strategy
        topo = pg.topology
        self.layout = Layout(sum(p.numel() for p in params), topo.n, topo.m)
        lay = self.layout
        self.numel, self.padded, self.block = lay.numel, lay.padded, lay.block
        self.n, self.m, self.g = lay.n, lay.m, lay.g
        self.l, self.k = pg.local_rank, pg.group_index
        self.rank = self.k * self.m + self.l
        dtypes = {p.dtype for p in params}
        if len(dtypes) > 1:
            raise ValueError(
                f"all parameters of one buffer must share a dtype, got {sorted(map(str, dtypes))}; "
                "cast the module (e.g. module.float()) before wrapping it"
            )
        src_dtype = params[0].dtype if params else torch.float32
        self.dtype = dtype or src_dtype
        self.device = params[0].device if params else torch.device("cpu")
        self.shapes = [p.shape for p in params]
        self.offsets = []
        self.classes = [type(p) for p in params]
        src = torch.zeros(self.padded, dtype=src_dtype, device=self.device)
        off = 0
        with torch.no_grad():
            for p in params:
                self.offsets.append(off)
                src[off : off + p.numel()].copy_(p.detach().reshape(-1))
                off += p.numel()
        if self.n > 1:  # same starting point on every rank (as DDP): rank 0's values
            dist.broadcast(src, src=0)
        # mixed precision: the full-precision values seed the optimizer's master copy
        self.master_source = None if self.dtype == src_dtype else src
        full = src if self.dtype == src_dtype else src.to(self.dtype)
        self.full = full
        start, end = lay.shard_range(level, self.rank)
        self.shard = full if level == "N" else full[start:end].clone()
        self.gathered = False
        self.fetched = True  # storage of ``full`` holds the gathered values
        if level != "N":
            self.meter.add(self.full_bytes())
        self._bind()
        if level != "N":
            self.release()

    # ---- views
    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views (module shapes) of a full-size flat tensor."""
        return [
            flat[o : o + s.numel()].view(s) for o, s in zip(self.offsets, self.shapes, strict=True)
        ]

    def info(self, i: int) -> dict[str, str]:
        return {
            "name": self.names[i],
            "strategy": self.strategy,
            "level": self.level,
            "hint": "use engine.gathered_parameters()",
        }

    def _bind(self) -> None:
        for p, cls, v in zip(self.params, self.classes, self.views(self.full), strict=True):
            set_gathered(p, cls, v)
        self.gathered = True

    # ---- t_param
    def full_bytes(self) -> int:
        return self.padded * self.full.element_size()

    def gather(self, global_comm: str) -> None:
        """All-gather the p-level shard into the full buffer and bind the module's parameters
        (already gathered: only checks the binding; no parameters: marks it gathered)."""
        self.fetch(global_comm)
        self.bind()

    def fetch(self, global_comm: str) -> None:
        """The communication half of :meth:`gather` (t_param into the full buffer), without
        touching the module's parameters: the per-layer engine runs it on its communication
        thread (prefetch) and binds on the compute thread."""
        if not self.params or self.gathered or self.fetched:
            return
        alloc_storage(self.full, self.padded)
        self.meter.add(self.full_bytes())
        self.fetched = True
        gather_into(self.full, self.shard, self.level, self.layout, self.pg, global_comm)

    def bind(self) -> None:
        """Bind the module's parameters to the fetched full buffer."""
        if not self.params:
            self.gathered = True
            return
        if self.gathered:
            self.check_bound()
            return
        if not self.fetched:
            raise RuntimeError("internal: ParameterBuffer.bind() before fetch()")
        self._bind()

    def check_bound(self) -> None:
        """Raise if the module's parameters no longer view the engine's buffer."""
        base = self.full.untyped_storage().data_ptr()
        for p, name in zip(self.params, self.names, strict=True):
            if p.untyped_storage().data_ptr() != base:
                raise RuntimeError(
                    f"parameter {name!r} no longer lives in the paro engine's buffer: the module's "
                    "parameters were replaced or converted after wrapping (module.to(), .double(), "
                    "load_state_dict(assign=True), p.data = ...). Convert or load the module "
                    "before wrapping it, or load through engine.load_state_dict()."
                )

    def release(self) -> None:
        """Sharded placeholders for the module's parameters, then free the full buffer (p ≠ N)."""
        if self.level == "N" or not (self.gathered or self.fetched):
            return
        if self.gathered:
            for i, (p, cls) in enumerate(zip(self.params, self.classes, strict=True)):
                set_sharded(p, cls, self.info(i))
        free_storage(self.full)
        self.meter.sub(self.full_bytes())
        self.gathered = False
        self.fetched = False

    def writeback(self) -> None:
        """Copy this rank's slice of the (gathered, possibly user-modified) full buffer to its shard."""
        if self.level != "N" and self.gathered:
            start, end = self.layout.shard_range(self.level, self.rank)
            self.shard.copy_(self.full[start:end])

    def shard_bytes(self) -> int:
        return self.shard.numel() * self.shard.element_size() if self.params else 0
