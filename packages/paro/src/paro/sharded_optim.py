"""The sharded optimizer step (paper §3.5): the wrapped torch optimizer updates the os-level slice
in place, then t_syncp brings parameters back to level ``p``.

The optimizer's single flat parameter is an *alias* of the os-level slice of the p-level buffer
(the os level is at least as fine as ``p``), so updates land in place and no master copy exists in
full precision training. Only elementwise optimizers give the same update on a flat shard as on
the module's tensors: others are refused at construction with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from paro.gathering import ParameterBuffer
from paro.layout import all_gather
from paro.strategy import Strategy

__all__ = ["ELEMENTWISE_OPTIMIZERS", "NON_ELEMENTWISE_OPTIMIZERS", "ShardedOptimizer"]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

ELEMENTWISE_OPTIMIZERS: tuple[type, ...] = tuple(
    getattr(torch.optim, name)
    for name in (
        "SGD",
        "Adam",
        "AdamW",
        "Adamax",
        "NAdam",
        "RAdam",
        "RMSprop",
        "Adagrad",
        "Adadelta",
        "Rprop",
        "ASGD",
    )
    if hasattr(torch.optim, name)
)

NON_ELEMENTWISE_OPTIMIZERS: dict[str, str] = {
    "LBFGS": "it needs a closure and takes global line-search steps over all parameters, which a "
    "per-shard step cannot reproduce",
    "Adafactor": "it factors the second moment into row and column statistics of each 2-D "
    "parameter, which do not exist on a flat shard",
    "SparseAdam": "it needs sparse gradients; the engine's gradients are dense flat buffers",
    "Muon": "it orthogonalises each 2-D parameter's update (Newton-Schulz), a whole-matrix "
    "operation that a flat shard cannot compute",
}


def check_optimizer(opt: object, assume_elementwise: bool) -> None:
    """Raise ``TypeError`` unless ``opt`` is a torch optimizer whose update is elementwise."""
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer_factory returned {type(opt).__name__}, not a torch.optim.Optimizer"
        )
    for cls in type(opt).__mro__:
        if cls.__module__.startswith("torch.optim") and cls.__name__ in NON_ELEMENTWISE_OPTIMIZERS:
            raise TypeError(
                f"{type(opt).__name__} is not supported by the paro engine: "
                f"{NON_ELEMENTWISE_OPTIMIZERS[cls.__name__]}. The engine's optimizer sees one flat "
                "shard of the parameters (as ZeRO), so only elementwise optimizers (SGD, Adam, "
                "AdamW, Adagrad, RMSprop, ...) give the same result as on the unsharded model."
            )
    if isinstance(opt, ELEMENTWISE_OPTIMIZERS) or assume_elementwise:
        return
    raise TypeError(
        f"{type(opt).__name__} is not a known elementwise optimizer "
        f"({', '.join(c.__name__ for c in ELEMENTWISE_OPTIMIZERS)}): the engine gives it one flat "
        "shard of the parameters, which is only equivalent to the unsharded model when every "
        "element's update depends on that element alone. If that holds for your optimizer, pass "
        "assume_elementwise_optimizer=True."
    )


class _Slice:
    """The os-level slice of one :class:`ParameterBuffer` and the optimizer's flat parameter."""

    def __init__(self, tb: ParameterBuffer, strategy: Strategy) -> None:
        self.tb, self.s = tb, strategy
        self.os_range = tb.layout.shard_range(strategy.os, tb.rank)
        # the os-level slice of the parameter shard; in full precision the optimizer's parameter
        # is this very tensor, in mixed precision an fp32 master copy of it (paper §3.3: 2+2+12)
        self.os_view = self._os_slice()
        src = tb.master_source
        self.mixed = src is not None
        if src is None:
            self.master = nn.Parameter(self.os_view, requires_grad=True)
        else:
            start, end = self.os_range
            self.master = nn.Parameter(src[start:end].clone(), requires_grad=True)
            tb.master_source = None

    def _os_slice(self) -> torch.Tensor:
        s, tb = self.s, self.tb
        if s.os == s.p:
            return tb.shard
        p_start, _ = tb.layout.shard_range(s.p, tb.rank)
        start, end = self.os_range
        return tb.shard[start - p_start : end - p_start]

    def unused_index(self, unused: list[int]) -> torch.Tensor | None:
        start, end = self.os_range
        idx = []
        for i in unused:
            o, c = self.tb.offsets[i], self.tb.shapes[i].numel()
            lo, hi = max(o, start), min(o + c, end)
            if lo < hi:
                idx.append(torch.arange(lo - start, hi - start, device=self.master.device))
        return torch.cat(idx) if idx else None


class ShardedOptimizer:
    """The os-level flat masters (aliases of the parameter shards), one per trainable
    :class:`ParameterBuffer` (one for the whole model, or one per layer unit), and the wrapped
    torch optimizer over them."""

    def __init__(
        self,
        tbs: ParameterBuffer | list[ParameterBuffer],
        strategy: Strategy,
        factory: OptimizerFactory,
        global_comm: str,
        assume_elementwise: bool = False,
    ) -> None:
        if not callable(factory):
            raise TypeError("optimizer_factory must be callable: params -> torch.optim.Optimizer")
        tbs = [tbs] if isinstance(tbs, ParameterBuffer) else list(tbs)
        if not tbs:
            raise ValueError("ShardedOptimizer needs at least one trainable buffer")
        self.s, self.global_comm = strategy, global_comm
        self.slices = [_Slice(tb, strategy) for tb in tbs]
        self.tbs = tbs
        self.masters = [sl.master for sl in self.slices]
        self.mixed = self.slices[0].mixed
        self.optimizer = factory(list(self.masters))
        check_optimizer(self.optimizer, assume_elementwise)
        params = [p for grp in self.optimizer.param_groups for p in grp["params"]]
        if len(params) != len(self.masters) or any(
            a is not b for a, b in zip(params, self.masters, strict=True)
        ):
            raise ValueError(
                "optimizer_factory must build the optimizer over exactly the list it is given "
                "(the engine's flat shards, in order), e.g. "
                "lambda ps: torch.optim.AdamW(ps, lr=1e-3)"
            )

    # ---- single-buffer aliases (whole-model engines)
    @property
    def master(self) -> nn.Parameter:
        return self.masters[0]

    @property
    def os_range(self) -> tuple[int, int]:
        return self.slices[0].os_range

    def per_element_state(self, j: int = 0) -> dict[str, torch.Tensor]:
        """Per-element optimizer state tensors of master ``j`` (e.g. Adam's m and v)."""
        master = self.masters[j]
        st = self.optimizer.state.get(master, {})
        return {
            k: v
            for k, v in st.items()
            if isinstance(v, torch.Tensor) and v.dim() == 1 and v.numel() == master.numel()
        }

    def step(self, grads: list[torch.Tensor], unused: list[list[int]]) -> None:
        """Update the os-level slices with ``grads`` (one per buffer, already averaged);
        ``unused[j]`` lists buffer ``j``'s parameters (no gradient on any rank) that keep their
        values and their optimizer state."""
        saved = []
        for j, sl in enumerate(self.slices):
            idx = sl.unused_index(unused[j]) if unused[j] else None
            if idx is not None:
                saved.append(
                    (
                        j,
                        idx,
                        sl.master.data[idx].clone(),
                        {k: v[idx].clone() for k, v in self.per_element_state(j).items()},
                    )
                )
            sl.master.grad = grads[j].to(sl.master.dtype).view_as(sl.master)
        self.optimizer.step()
        for sl in self.slices:
            sl.master.grad = None
        for j, idx, values, states in saved:
            self.masters[j].data[idx] = values
            for k, v in self.per_element_state(j).items():
                v[idx] = states.get(k, 0)
        for sl in self.slices:
            if sl.mixed:
                with torch.no_grad():
                    sl.os_view.copy_(sl.master)
            self.sync_params(sl)

    def sync_params(self, sl: _Slice) -> None:
        """t_syncp: bring updated parameters from the os level back to the p level."""
        s, tb, pg, lay = self.s, sl.tb, sl.tb.pg, sl.tb.layout
        key = s.p + s.os
        if key == "NI":
            all_gather(lay.i_parts(tb.full), lay.i_view(tb.full, tb.l), pg.intra, lay.m)
        elif key == "NG":
            block = sl.os_view
            if self.global_comm == "flat":
                all_gather(lay.rank_parts(tb.full), block, None, lay.n)
            else:
                ishard = lay.i_view(tb.full, tb.l)
                all_gather(lay.g_parts(ishard), block, pg.inter, lay.g)
                all_gather(lay.i_parts(tb.full), ishard, pg.intra, lay.m)
        elif key == "IG":
            all_gather(lay.g_parts(tb.shard), sl.os_view, pg.inter, lay.g)

    def state_bytes(self) -> int:
        """Per-element optimizer state, plus the fp32 master copies in mixed precision."""
        total = 0
        for j, sl in enumerate(self.slices):
            if sl.mixed:
                total += sl.master.numel() * sl.master.element_size()
            total += sum(v.numel() * v.element_size() for v in self.per_element_state(j).values())
        return total
