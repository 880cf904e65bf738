"""The PaRO-DP engine: one sharded data-parallel engine for every (p, g, os) strategy (paper §3.5).

Flat buffers and the slice layout
---------------------------------
Trainable parameters are flattened (in ``module.parameters()`` order) into one buffer padded to a
multiple of ``n`` and cut into ``n`` blocks of ``b`` elements, one per owner rank. Rank
``r = k·m + l`` (group ``k``, local index ``l``) owns *global* block ``r``; the *intra* (I) shard of
local index ``l`` is the strided union of the blocks of ranks ``{l, l+m, l+2m, ...}`` — the layout
of the official branch (dossier §3.5, §5.3). The buffer stores blocks in ``[l][k]`` order, so an
I-shard and a G-shard are both contiguous slices and every switch between them is a single
inter-group collective (reduce-scatter I→G, all-gather G→I) over the ranks that share ``l``.

One micro-step (:meth:`ParoDataParallel.forward` + :meth:`ParoDataParallel.backward`):

- ``p``: N keeps the full buffer; I all-gathers the I-shards inside the group; G all-gathers across
  groups, then inside the group (freed after forward and gathered again for backward when
  ``reshard_after_forward``) — t_param.
- ``g``: N accumulates the full gradient locally; I reduce-scatters it inside the group into an
  accumulated I-shard; G reduce-scatters inside then across groups into a G-shard — t_gradient.

At the accumulation boundary (:meth:`ParoDataParallel.step`): t_syncg brings the gradient to the
optimizer-state level (N→N all-reduce, N→I intra RS + inter AR, N→G intra RS + inter RS, I→I inter
AR, I→G inter RS), the gradient is averaged over ``n·A``, the wrapped torch optimizer updates its
shard in place (the optimizer's parameter is an alias of the os-level slice of the parameter
buffer), and t_syncp brings parameters back to their level (N←I intra AG, N←G inter+intra AG,
I←G inter AG).

Works with any ``nn.Module`` and any torch optimizer whose update is elementwise (SGD, Adam, AdamW,
...): the optimizer sees one flat parameter per buffer, as in ZeRO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from paro.cost import GLOBAL_COMM, padded
from paro.horing import hierarchical_all_reduce_, ho_ring_all_reduce_
from paro.strategy import Strategy
from paro.topology import ParoGroups, build_groups

__all__ = ["ParoDataParallel"]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def _free(t: torch.Tensor) -> None:
    t.untyped_storage().resize_(0)


def _alloc(t: torch.Tensor, numel: int) -> None:
    storage = t.untyped_storage()
    need = numel * t.element_size()
    if storage.nbytes() != need:
        storage.resize_(need)


class _FlatBuffer:
    """One flat buffer of parameters (trainable or frozen) with its p-level persistent shard."""

    def __init__(self, params: list[nn.Parameter], level: str, pg: ParoGroups) -> None:
        self.params = params
        self.level = level
        self.pg = pg
        topo = pg.topology
        n, m, g = topo.n, topo.m, topo.g
        self.numel = sum(p.numel() for p in params)
        self.padded = padded(self.numel, n)
        self.block = self.padded // n
        dtypes = {p.dtype for p in params}
        if len(dtypes) > 1:
            raise ValueError(
                f"all parameters of one buffer must share a dtype, got {sorted(map(str, dtypes))}; "
                "cast the module (e.g. module.float()) before wrapping it"
            )
        self.dtype = params[0].dtype if params else torch.float32
        device = params[0].device if params else torch.device("cpu")
        full = torch.zeros(self.padded, dtype=self.dtype, device=device)
        off = 0
        with torch.no_grad():
            for p in params:
                full[off : off + p.numel()].copy_(p.detach().reshape(-1))
                off += p.numel()
        # same starting point on every rank (as DDP): rank 0's values
        if n > 1:
            dist.broadcast(full, src=0)
        self.full = full
        self.l, self.k = pg.local_rank, pg.group_index
        self.m, self.g, self.n = m, g, n
        ib = g * self.block  # I-shard length
        if level == "N":
            self.shard = full
        elif level == "I":
            self.shard = full[self.l * ib : (self.l + 1) * ib].clone()
        else:
            self.shard = self.i_view(full)[self.k * self.block : (self.k + 1) * self.block].clone()
        self._bind(full)
        self.gathered = level == "N"
        if level != "N":
            _free(self.full)

    # ---- layout helpers: the buffer is [l][k][b]
    def i_view(self, t: torch.Tensor) -> torch.Tensor:
        """The I-shard (local index ``l``) of a full-size buffer ``t``."""
        ib = self.g * self.block
        return t[self.l * ib : (self.l + 1) * ib]

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

    def _bind(self, full: torch.Tensor) -> None:
        off = 0
        for p in self.params:
            p.data = full[off : off + p.numel()].view_as(p)
            off += p.numel()

    # ---- parameter gathering
    def gather(self, global_comm: str) -> None:
        if self.gathered or not self.params:
            self.gathered = True
            return
        _alloc(self.full, self.padded)
        pg = self.pg
        if self.level == "I":
            _all_gather(self.i_parts(self.full), self.shard, pg.intra, self.m)
        elif global_comm == "flat":
            _all_gather(self.rank_parts(self.full), self.shard, None, self.n)
        else:
            ishard = torch.empty(self.g * self.block, dtype=self.dtype, device=self.full.device)
            _all_gather(self.g_parts(ishard), self.shard, pg.inter, self.g)
            _all_gather(self.i_parts(self.full), ishard, pg.intra, self.m)
        self.gathered = True

    def release(self) -> None:
        if self.level != "N" and self.gathered:
            _free(self.full)
            self.gathered = False


def _all_gather(outs: list[torch.Tensor], inp: torch.Tensor, group: Any, size: int) -> None:
    if size == 1:
        outs[0].copy_(inp)
        return
    dist.all_gather(outs, inp.clone(), group=group)


def _reduce_scatter(out: torch.Tensor, ins: list[torch.Tensor], group: Any, size: int) -> None:
    if size == 1:
        out.copy_(ins[0])
        return
    dist.reduce_scatter(out, ins, group=group)


def _all_reduce(t: torch.Tensor, group: Any, size: int) -> None:
    if size > 1:
        dist.all_reduce(t, group=group)


class ParoDataParallel(nn.Module):
    """Sharded data parallelism under a PaRO strategy (paper §3, dossier §5.3).

    Args:
        module: any ``nn.Module``; its parameters become views into the engine's flat buffers.
        optimizer_factory: ``params -> torch.optim.Optimizer``; receives the os-level shard(s) as
            flat parameters (elementwise optimizers only: SGD, Adam, AdamW, ...).
        strategy: ``"NIG"``, ``"IIG"``, ``"GGG"``, an alias (``"ZeRO-3"``) or a :class:`Strategy`.
        groups: the :class:`ParoGroups` (from :func:`paro.build_groups`); or give ``group_size``.
        group_size: ranks per group (``m``) when ``groups`` is not given.
        accum_steps: micro-steps per optimizer step (``A``).
        global_comm: ``"hier"`` (PaRO-CC: global collectives as intra + inter steps), ``"horing"``
            (as hier, but the N→N all-reduce is the point-to-point HO-Ring), or ``"flat"`` (one
            collective over all ranks, as ZeRO/NCCL).
        reshard_after_forward: free gathered parameters after forward and gather again for
            backward (ZeRO-3/FSDP behaviour, two all-gathers per micro-step).

    Usage: ``loss = f(engine(x)); engine.backward(loss)`` for each micro-step, then
    ``engine.step()`` after ``accum_steps`` of them. Gradients are averaged over ranks and
    micro-steps (divided by ``n·A`` once).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer_factory: OptimizerFactory,
        strategy: str | Strategy,
        *,
        groups: ParoGroups | None = None,
        group_size: int | None = None,
        accum_steps: int = 1,
        global_comm: str = "hier",
        reshard_after_forward: bool = True,
    ) -> None:
        super().__init__()
        self.strategy = Strategy.parse(strategy)
        if global_comm not in GLOBAL_COMM:
            raise ValueError(f"global_comm must be one of {GLOBAL_COMM}, got {global_comm!r}")
        if not isinstance(accum_steps, int) or accum_steps < 1:
            raise ValueError(f"accum_steps must be a positive int, got {accum_steps!r}")
        if groups is None:
            if group_size is None:
                raise ValueError("give either groups (paro.build_groups) or group_size")
            groups = build_groups(group_size)
        elif group_size is not None and group_size != groups.topology.m:
            raise ValueError(
                f"group_size={group_size} disagrees with groups (m={groups.topology.m})"
            )
        if not callable(optimizer_factory):
            raise TypeError("optimizer_factory must be callable: params -> torch.optim.Optimizer")
        self.module = module
        self.groups = groups
        self.topology = groups.topology
        self.accum_steps = accum_steps
        self.global_comm = global_comm
        self.reshard_after_forward = reshard_after_forward
        s = self.strategy
        trainable = [p for p in module.parameters() if p.requires_grad]
        frozen = [p for p in module.parameters() if not p.requires_grad]
        if not trainable:
            raise ValueError("the module has no trainable parameters (requires_grad=True)")
        self._train = _FlatBuffer(trainable, s.p, groups)
        self._frozen = _FlatBuffer(frozen, s.p, groups) if frozen else None
        tb = self._train
        # gradient buffers: the full one (views = param.grad) and the g-level accumulator
        self._full_grad = torch.zeros(tb.padded, dtype=tb.dtype, device=tb.shard.device)
        if s.g == "N":
            self._grad = self._full_grad
        else:
            self._grad = self._full_grad.new_zeros(
                tb.padded // (self.topology.m if s.g == "I" else self.topology.n)
            )
        self._bind_grads()
        if s.g != "N":
            _free(self._full_grad)
        # the optimizer's parameter: an alias of the os-level slice of the p-level buffer
        # (kept out of nn.Module registration: it aliases the module's own parameters)
        self._masters = [nn.Parameter(self._os_slice(tb), requires_grad=True)]
        self.optimizer = optimizer_factory(list(self._masters))
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer_factory returned {type(self.optimizer).__name__}, not a torch.optim.Optimizer"
            )
        self._micro = 0

    # ---- layout
    def _os_slice(self, tb: _FlatBuffer) -> torch.Tensor:
        s = self.strategy
        b = tb.block
        if s.os == s.p:
            return tb.shard
        if s.os == "I":  # p = N
            return tb.i_view(tb.shard)
        # os = G
        ishard = tb.shard if s.p == "I" else tb.i_view(tb.shard)
        return ishard[tb.k * b : (tb.k + 1) * b]

    def _bind_grads(self) -> None:
        off = 0
        for p in self._train.params:
            p.grad = self._full_grad[off : off + p.numel()].view_as(p)
            off += p.numel()

    # ---- micro-step
    def _flat_buffers(self) -> list[_FlatBuffer]:
        return [self._train] + ([self._frozen] if self._frozen is not None else [])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped module (gathering sharded parameters first, t_param)."""
        for buf in self._flat_buffers():
            buf.gather(self.global_comm)
        out = self.module(*args, **kwargs)
        if self.reshard_after_forward and torch.is_grad_enabled():
            for buf in self._flat_buffers():
                buf.release()
        return out

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-step, then the gradient reduction of the g level (t_gradient)."""
        if self._micro >= self.accum_steps:
            raise RuntimeError(
                f"{self._micro} micro-steps already done with accum_steps={self.accum_steps}: "
                "call step() first"
            )
        for buf in self._flat_buffers():
            buf.gather(self.global_comm)
        s, tb, pg = self.strategy, self._train, self.groups
        if s.g != "N":
            _alloc(self._full_grad, tb.padded)
            self._full_grad.zero_()
        # (re)bind .grad to the flat buffer: a user's zero_grad(set_to_none=True) drops the views
        self._bind_grads()
        loss.backward()
        for buf in self._flat_buffers():
            buf.release()
        if s.g == "I":
            tmp = torch.empty_like(self._grad)
            _reduce_scatter(tmp, tb.i_parts(self._full_grad), pg.intra, tb.m)
            self._grad.add_(tmp)
            _free(self._full_grad)
        elif s.g == "G":
            tmp = torch.empty_like(self._grad)
            if self.global_comm == "flat":
                _reduce_scatter(tmp, tb.rank_parts(self._full_grad), None, tb.n)
            else:
                ishard = self._full_grad.new_empty(tb.g * tb.block)
                _reduce_scatter(ishard, tb.i_parts(self._full_grad), pg.intra, tb.m)
                _reduce_scatter(tmp, tb.g_parts(ishard), pg.inter, tb.g)
            self._grad.add_(tmp)
            _free(self._full_grad)
        self._micro += 1

    # ---- boundary
    def _sync_grads(self) -> torch.Tensor:
        """t_syncg: bring the accumulated gradient to the optimizer-state level."""
        s, tb, pg = self.strategy, self._train, self.groups
        m, g, n = tb.m, tb.g, tb.n
        key = s.g + s.os
        grad = self._grad
        if key == "NN":
            if self.global_comm == "flat":
                _all_reduce(grad, None, n)
            elif self.global_comm == "horing":
                if n > 1:
                    ho_ring_all_reduce_(grad, self.topology)
            else:
                hierarchical_all_reduce_(grad, pg)
            return grad
        if key in ("NI", "NG"):
            if key == "NG" and self.global_comm == "flat":
                out = grad.new_empty(tb.block)
                _reduce_scatter(out, tb.rank_parts(grad), None, n)
                return out
            ishard = grad.new_empty(g * tb.block)
            _reduce_scatter(ishard, tb.i_parts(grad), pg.intra, m)
            if key == "NI":
                _all_reduce(ishard, pg.inter, g)
                return ishard
            out = grad.new_empty(tb.block)
            _reduce_scatter(out, tb.g_parts(ishard), pg.inter, g)
            return out
        if key == "II":
            _all_reduce(grad, pg.inter, g)
            return grad
        if key == "IG":
            out = grad.new_empty(tb.block)
            _reduce_scatter(out, tb.g_parts(grad), pg.inter, g)
            return out
        return grad  # GG

    def _sync_params(self) -> None:
        """t_syncp: bring updated parameters from the optimizer-state level back to the p level."""
        s, tb, pg = self.strategy, self._train, self.groups
        key = s.p + s.os
        if key == "NI":
            _all_gather(tb.i_parts(tb.full), tb.i_view(tb.full), pg.intra, tb.m)
        elif key == "NG":
            block = self._masters[0].data
            if self.global_comm == "flat":
                _all_gather(tb.rank_parts(tb.full), block, None, tb.n)
            else:
                ishard = tb.i_view(tb.full)
                _all_gather(tb.g_parts(ishard), block, pg.inter, tb.g)
                _all_gather(tb.i_parts(tb.full), ishard, pg.intra, tb.m)
        elif key == "IG":
            _all_gather(tb.g_parts(tb.shard), self._masters[0].data, pg.inter, tb.g)

    def step(self) -> None:
        """Optimizer step at the accumulation boundary (t_syncg, update, t_syncp)."""
        if self._micro != self.accum_steps:
            raise RuntimeError(
                f"step() after {self._micro} micro-steps, expected accum_steps={self.accum_steps} "
                "(call engine(x) and engine.backward(loss) that many times first)"
            )
        grad = self._sync_grads()
        grad.div_(self.topology.n * self.accum_steps)
        self._masters[0].grad = grad.view_as(self._masters[0])
        self.optimizer.step()
        self._masters[0].grad = None
        self._sync_params()
        self._grad.zero_()
        self._micro = 0

    def train_step(
        self, batches: Iterable[Any], loss_fn: Callable[[Any, Any], torch.Tensor]
    ) -> float:
        """``accum_steps`` micro-steps over ``batches`` of ``(x, y)`` then :meth:`step`; mean loss."""
        total, count = 0.0, 0
        for x, y in batches:
            loss = loss_fn(self(x), y)
            self.backward(loss)
            total += float(loss.detach())
            count += 1
        self.step()
        return total / max(count, 1)

    # ---- inspection
    def state_bytes(self) -> dict[str, int]:
        """Persistent per-rank bytes: parameter shards, gradient accumulator, optimizer states.

        Optimizer states count the per-element tensors (same numel as the shard, e.g. Adam's m
        and v); scalar counters such as Adam's ``step`` are O(1) and excluded.
        """
        params = sum(
            b.shard.numel() * b.shard.element_size() for b in self._flat_buffers() if b.params
        )
        grads = self._grad.numel() * self._grad.element_size()
        os_bytes = 0
        for st in self.optimizer.state.values():
            for v in st.values():
                if isinstance(v, torch.Tensor) and v.numel() == self._masters[0].numel():
                    os_bytes += v.numel() * v.element_size()
        return {"params": params, "grads": grads, "optimizer_states": os_bytes}

    def full_parameters(self) -> torch.Tensor:
        """The trainable parameters, gathered, as one flat tensor in ``module.parameters()`` order.

        Collective for sharded ``p`` (every rank must call it). For tests and checkpoints.
        """
        tb = self._train
        was = tb.gathered
        tb.gather(self.global_comm)
        out = torch.cat([p.detach().reshape(-1) for p in tb.params]).clone()
        if not was:
            tb.release()
        return out
