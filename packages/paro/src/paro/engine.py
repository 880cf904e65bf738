"""The PaRO-DP engine: one sharded data-parallel engine for every (p, g, os) strategy (paper §3.5).

The engine is the composition of four small parts (torchtitan style):

- :mod:`paro.gathering` — :class:`~paro.gathering.ParameterBuffer`: the p-level parameter shard,
  t_param gathers and releases, the module's parameters as safe views (:mod:`paro.views`);
- :mod:`paro.reduction` — :class:`~paro.reduction.GradientReducer`: t_gradient per micro-step and
  t_syncg at the boundary;
- :mod:`paro.sharded_optim` — :class:`~paro.sharded_optim.ShardedOptimizer`: the update of the
  os-level slice (an alias of the parameter shard), t_syncp, unused parameters;
- :mod:`paro.checkpoint` — sharded and full checkpoints, resharding;
- :mod:`paro.units` — per-layer units (one buffer, reducer and optimizer shard each), their
  gather / prefetch / release hooks and the communication thread that overlaps each layer's
  gradient reduction with the rest of backward (``wrap=``; ``wrap=None``: one root unit).

One micro-step (:meth:`ParoDataParallel.forward` + :meth:`ParoDataParallel.backward`): gather the
parameters to full (p: N keeps them full; I all-gathers inside the group; G across groups then
inside), run forward (release after it when ``reshard_after_forward``), gather again for backward,
let autograd write into a full gradient buffer, reduce it to the gradient level ``g``. At the
boundary (:meth:`ParoDataParallel.step`): t_syncg to level ``os``, divide by ``n·A``, the wrapped
optimizer's update, t_syncp back to level ``p``. Layout: :mod:`paro.layout`.

Works with any ``nn.Module`` and any torch optimizer whose update is elementwise (SGD, Adam, AdamW,
...): the optimizer sees one flat parameter per buffer, as in ZeRO.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from paro import checkpoint as _ckpt
from paro.cost import GLOBAL_COMM
from paro.gathering import MemoryMeter, ParameterBuffer
from paro.layout import all_reduce
from paro.reduction import GradientReducer
from paro.sharded_optim import OptimizerFactory, ShardedOptimizer
from paro.strategy import Strategy
from paro.topology import ParoGroups, build_groups
from paro.units import LayerScheduler, Unit, WrapSpec, find_units, output_tensors, partition
from paro.views import is_sharded, set_grad

__all__ = ["ParoDataParallel"]

_DIRECT_BACKWARD = (
    "a gradient reached the output of a paro engine outside engine.backward(loss) (plain "
    "loss.backward() or torch.autograd.grad): the engine must gather sharded parameters before "
    "backward and reduce gradients after it. Run the forward again and call engine.backward(loss)."
)


def _cast_inputs(obj: Any, dtype: torch.dtype) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return type(obj)({k: _cast_inputs(v, dtype) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_cast_inputs(v, dtype) for v in obj)
    return obj


class ParoDataParallel(nn.Module):
    """Sharded data parallelism under a PaRO strategy (paper §3, dossier §5.3).

    Args:
        module: any ``nn.Module``; the engine takes over its parameters' storage (see
            :mod:`paro.views` for what reading them between steps gives).
        optimizer_factory: ``params -> torch.optim.Optimizer``; receives the os-level shard as one
            flat parameter. Elementwise optimizers only (SGD, Adam, AdamW, ...); LBFGS, Adafactor,
            SparseAdam and Muon are refused with the reason.
        strategy: ``"NIG"``, ``"IIG"``, ``"GGG"``, an alias (``"ZeRO-3"``) or a :class:`Strategy`.
        groups: the :class:`ParoGroups` (from :func:`paro.build_groups`); or give ``group_size``.
        group_size: ranks per group (``m``) when ``groups`` is not given.
        accum_steps: micro-steps per optimizer step (``A``).
        global_comm: ``"hier"`` (PaRO-CC: global collectives as intra + inter steps), ``"horing"``
            (as hier, but the N→N all-reduce is the point-to-point HO-Ring), or ``"flat"`` (one
            collective over all ranks, as ZeRO/NCCL).
        reshard_after_forward: free gathered parameters after forward and gather again for
            backward (ZeRO-3/FSDP behaviour, two all-gathers per micro-step).
        find_unused_parameters: as DDP's: trainable parameters that get no gradient on any rank in
            a step keep their values and optimizer state (one small all-reduce of flags per step).
            When False (default, as DDP), a parameter without a gradient in a micro-step is an
            error that names it.
        broadcast_buffers: as DDP's: module buffers (BatchNorm statistics) are broadcast from
            rank 0 at every forward (one collective, only when the module has buffers).
        assume_elementwise_optimizer: accept an optimizer class the engine does not know.
        param_dtype: mixed precision (``torch.bfloat16``, or ``torch.float16`` where the device
            supports it): parameters and gradients are kept, gathered and reduced in this dtype,
            floating-point inputs are cast to it, and the optimizer updates a full-precision
            master copy of its os-level slice (paper §3.3's 2 + 2 + 12 bytes per parameter with
            Adam). ``None`` (default): the module's own dtype, no master copy.
        wrap: the per-layer gathering units (:mod:`paro.units`): ``"auto"`` (default: the
            children of the module's largest ``nn.ModuleList``, e.g. a Hugging Face model's
            decoder layers; none in a model without one), a module class (e.g. the HF decoder
            layer class), a tuple of classes, or a list of submodules. Each unit is gathered
            just before its forward and its backward and released after them, and its gradient
            is reduced as soon as it is complete, overlapping the rest of backward; parameters
            outside every unit (or shared by several) form the root unit, gathered for the
            whole micro-step. ``None``: the whole model is gathered at once (0.2.0 behaviour).
        prefetch: per-layer mode: start gathering the next unit (forward) / the previous unit
            (backward) while the current one computes.
        overlap_reduction: per-layer mode: run each unit's gradient reduction on the
            communication thread while backward continues (False: wait for it in place).
        reduce_scatter: ``"ring"``: the gradient reduce-scatters inside a group and across
            groups run as paro's point-to-point ring (the ring model's ``(k-1)/k·S`` bytes per
            rank); ``"backend"``: ``torch.distributed.reduce_scatter`` (gloo's sends about twice
            that); ``"auto"`` (default): the ring on gloo, the backend's (NCCL's ring) otherwise.
            One-collective world reduce-scatters (``global_comm="flat"``) stay the backend's.

    Usage: ``loss = f(engine(x)); engine.backward(loss)`` for each micro-step, optionally
    ``engine.clip_grad_norm_(max_norm)``, then ``engine.step()`` after ``accum_steps`` of them.
    Gradients are averaged over ranks and micro-steps (divided by ``n·A`` once).
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
        find_unused_parameters: bool = False,
        broadcast_buffers: bool = True,
        assume_elementwise_optimizer: bool = False,
        param_dtype: torch.dtype | None = None,
        wrap: WrapSpec = "auto",
        prefetch: bool = True,
        overlap_reduction: bool = True,
        reduce_scatter: str = "auto",
    ) -> None:
        super().__init__()
        self.strategy = Strategy.parse(strategy)
        if global_comm not in GLOBAL_COMM:
            raise ValueError(f"global_comm must be one of {GLOBAL_COMM}, got {global_comm!r}")
        if not isinstance(accum_steps, int) or accum_steps < 1:
            raise ValueError(f"accum_steps must be a positive int, got {accum_steps!r}")
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
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
        if param_dtype is not None and (
            not isinstance(param_dtype, torch.dtype) or not param_dtype.is_floating_point
        ):
            raise ValueError(
                f"param_dtype must be a floating torch.dtype (torch.bfloat16), got {param_dtype!r}"
            )
        if reduce_scatter not in ("auto", "ring", "backend"):
            raise ValueError(
                f"reduce_scatter must be 'auto', 'ring' or 'backend', got {reduce_scatter!r}"
            )
        if reduce_scatter == "auto":
            reduce_scatter = "ring" if dist.get_backend() == "gloo" else "backend"
        self.reduce_scatter = reduce_scatter
        named = list(module.named_parameters())
        if any(is_sharded(p) or getattr(p, "_paro_owner", None) is not None for _, p in named):
            raise ValueError("the module's parameters already belong to a paro engine")
        self.module = module
        self.groups = groups
        self.topology = groups.topology
        self.accum_steps = accum_steps
        self.global_comm = global_comm
        self.reshard_after_forward = reshard_after_forward
        self.find_unused_parameters = find_unused_parameters
        self.broadcast_buffers = broadcast_buffers
        self.param_dtype = param_dtype
        s = self.strategy
        trainable = [(n, p) for n, p in named if p.requires_grad]
        if not trainable:
            raise ValueError("the module has no trainable parameters (requires_grad=True)")
        layer_modules = find_units(module, wrap)
        owner = partition(module, layer_modules)
        self.meter = MemoryMeter()
        self._rank = groups.group_index * self.topology.m + groups.local_rank
        units = [Unit("<root>", None)] + [Unit(n, m) for n, m in layer_modules]
        for u_idx, u in enumerate(units):
            tr = [(i, n, p) for i, (n, p) in enumerate(trainable) if owner[id(p)] == u_idx]
            fr = [(n, p) for n, p in named if not p.requires_grad and owner[id(p)] == u_idx]
            if tr:
                u.train = ParameterBuffer(
                    [p for _, _, p in tr], [n for _, n, _ in tr], s.p, groups, str(s),
                    param_dtype, self.meter,
                )  # fmt: skip
                u.index = [i for i, _, _ in tr]
                u.reducer = GradientReducer(u.train, s, global_comm, reduce_scatter == "ring")
            if fr:
                u.frozen = ParameterBuffer(
                    [p for _, p in fr], [n for n, _ in fr], s.p, groups, str(s), param_dtype,
                    self.meter,
                )  # fmt: skip
        self._root = units[0]
        self._layers = [u for u in units[1:] if u.buffers()]
        self._units = [self._root, *self._layers]
        self._train_units = [u for u in units if u.train is not None]
        self._train_names = [n for n, _ in trainable]
        self._train_numel = sum(p.numel() for _, p in trainable)
        self._opt = ShardedOptimizer(
            [u.train for u in self._train_units],
            s,
            optimizer_factory,
            global_comm,
            assume_elementwise_optimizer,
        )
        self.optimizer = self._opt.optimizer
        self._masters = self._opt.masters
        for _, p in named:
            p._paro_owner = True
        self._used_micro = [False] * len(trainable)
        self._used_step = [False] * len(trainable)
        unit_of = {i: u for u in self._train_units for i in u.index}
        for i, (_, p) in enumerate(trainable):
            u = unit_of[i]
            p.register_post_accumulate_grad_hook(self._used_hook(i, None if u is self._root else u))
        self._sched = (
            LayerScheduler(
                self._layers,
                global_comm,
                prefetch=prefetch,
                overlap=overlap_reduction,
                in_backward=lambda: self._in_backward,
                direct_backward_error=_DIRECT_BACKWARD,
            )
            if self._layers
            else None
        )
        self.per_layer = self._sched is not None
        self._micro = 0
        self._synced: torch.Tensor | None = None
        self._in_backward = False
        self._broken: str | None = None
        self.steps_done = 0
        if self.topology.n > 1:
            self._sync_buffers()

    # ---- helpers
    def _buffers_flat(self) -> list[ParameterBuffer]:
        return [b for u in self._units for b in u.buffers()]

    @property
    def units(self) -> list[str]:
        """Names of the gathering units: ``"<root>"`` (if it has parameters), then the layers."""
        return [u.name for u in self._units if u.buffers()]

    def _used_hook(self, i: int, unit: Unit | None) -> Callable[[torch.Tensor], None]:
        def hook(_p: torch.Tensor) -> None:
            self._used_micro[i] = True
            if unit is not None and self._in_backward and self._sched is not None:
                self._sched.grad_ready(unit)

        return hook

    def _param_name(self, i: int) -> str:
        return self._train_names[i]

    def _grad_info(self, name: str) -> dict[str, str]:
        return {
            "name": name,
            "strategy": str(self.strategy),
            "level": self.strategy.g,
            "hint": "use engine.clip_grad_norm_() / engine.full_gradients()",
        }

    def _set_grads(
        self,
        views: list[list[torch.Tensor]] | None,
        placeholder: bool = False,
        units: list[Unit] | None = None,
    ) -> None:
        """Per trainable unit (``units``, default all): ``.grad`` = views, ``None`` or placeholder."""
        for j, u in enumerate(self._train_units if units is None else units):
            tb = u.train
            assert tb is not None
            for i, p in enumerate(tb.params):
                if placeholder:
                    set_grad(p, None, self._grad_info(tb.names[i]))
                else:
                    set_grad(p, None if views is None else views[j][i])

    def _gather(self, units: list[Unit] | None = None) -> None:
        for u in self._units if units is None else units:
            for buf in u.buffers():
                buf.gather(self.global_comm)

    def _release(self, units: list[Unit] | None = None) -> None:
        for u in self._units if units is None else units:
            for buf in u.buffers():
                buf.release()

    def _wait(self) -> None:
        """Per-layer mode: wait for the communication thread's queued collectives (gradient
        reductions may still run after backward() returned, overlapping the next forward)."""
        if self._sched is not None:
            self._sched.drain()

    def _sync_buffers(self) -> None:
        bufs = [b for b in self.module.buffers() if b.numel() > 0]
        if not self.broadcast_buffers or self.topology.n == 1 or not bufs:
            return
        self._wait()
        for b in bufs:
            dist.broadcast(b.data, src=0)

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise RuntimeError(self._broken)

    def _require_boundary(self, what: str) -> None:
        self._check_usable()
        self._wait()
        if self._micro != 0 or self._synced is not None:
            raise RuntimeError(
                f"{what} is only possible between steps: {self._micro} micro-step(s) of the "
                "current step are accumulated; call engine.step() (or engine.zero_grad() to "
                "drop them) first"
            )

    def _guard_hook(self, grad: torch.Tensor) -> None:
        if not self._in_backward:
            raise RuntimeError(_DIRECT_BACKWARD)

    # ---- micro-step
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped module (gathering sharded parameters first, t_param)."""
        self._check_usable()
        self._sync_buffers()
        if self.param_dtype is not None:
            args, kwargs = _cast_inputs((args, kwargs), self.param_dtype)
        grad = torch.is_grad_enabled()
        release = not grad or self.reshard_after_forward
        sched = self._sched
        if sched is None:
            self._gather()
        else:
            if any(b.level != "N" and b.params for b in self._root.buffers()):
                self._wait()  # the root's gather runs here, after queued reductions
            self._gather([self._root])
            sched.begin_forward(release)
        try:
            out = self.module(*args, **kwargs)
        finally:
            try:
                if sched is not None:
                    sched.end_forward(release)
            finally:
                if release:
                    self._release([self._root] if sched is not None else None)
        if grad:
            for t in output_tensors(out):
                if t.requires_grad and t.grad_fn is not None:
                    t.register_hook(self._guard_hook)
        return out

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-step, then the gradient reduction of the g level (t_gradient).

        Per-layer mode: each layer unit is gathered just before its backward and its gradient is
        reduced as soon as it is complete, on the communication thread, while backward goes on.
        The last reductions (and the root unit's) may still run when this returns, overlapping
        the next forward; every other entry point (``step``, ``clip_grad_norm_``, checkpoints,
        ``gathered_parameters``, the next ``backward``) waits for them first
        (``overlap_reduction=False``: this returns after all of them)."""
        self._check_usable()
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            raise TypeError(
                "engine.backward(loss) needs a tensor computed from engine(x) with grad enabled "
                f"(got {type(loss).__name__}{'' if not isinstance(loss, torch.Tensor) else ' without grad'})"
            )
        if loss.numel() != 1:
            raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
        if self._synced is not None:
            raise RuntimeError(
                "clip_grad_norm_() already ran for this step: call step() before the next backward"
            )
        if self._micro >= self.accum_steps:
            raise RuntimeError(
                f"{self._micro} micro-steps already done with accum_steps={self.accum_steps}: "
                "call step() first"
            )
        sched = self._sched
        self._wait()  # the previous micro-step's reductions (per-layer mode)
        # whole-model mode: every unit (the root) is gathered with its gradient buffer now;
        # per-layer mode: the root now, the layers in their pre-backward hooks
        eager = self._units if sched is None else [self._root]
        eager_train = [u for u in eager if u.train is not None]
        self._gather(eager)
        views = [u.reducer.begin_micro() for u in eager_train if u.reducer is not None]
        self._set_grads(views, units=eager_train)
        if sched is not None:
            self._set_grads(None, units=[u for u in self._layers if u.train is not None])
        self._used_micro = [False] * len(self._used_micro)
        self._in_backward = True
        try:
            loss.backward()
            unused = [i for i, u in enumerate(self._used_micro) if not u]
            if sched is not None:
                sched.end_backward()
            if unused and not self.find_unused_parameters:
                names = [self._train_names[i] for i in unused]
                raise RuntimeError(
                    f"trainable parameters received no gradient in this micro-step: {names}. "
                    "Pass find_unused_parameters=True to ParoDataParallel (as with DDP) to leave "
                    "them unchanged, or freeze them (requires_grad=False) before wrapping"
                )
        except BaseException:
            self._in_backward = False
            if sched is not None:
                sched.abort()
            self._set_grads(None)
            self._release()
            for u in self._train_units:
                assert u.reducer is not None
                u.reducer.abort_micro()
            self._broken = (
                "an exception interrupted engine.backward(); this step's accumulated gradient is "
                "undefined: call engine.zero_grad() to drop the step and continue"
            )
            raise
        self._in_backward = False
        self._set_grads(None, placeholder=True)
        self._release(eager)
        for u in eager_train:
            assert u.reducer is not None
            if sched is None:
                u.reducer.end_micro()
            else:  # queued after the layers' reductions; overlaps the next forward
                sched.reduce_async(u.reducer)
        if sched is not None and not sched.overlap:
            self._wait()
        self._used_step = [a or b for a, b in zip(self._used_step, self._used_micro, strict=True)]
        self._micro += 1

    # ---- boundary
    def _synced_grad(self) -> list[torch.Tensor]:
        """t_syncg of every trainable unit, divided by ``n·A`` (once per step)."""
        if self._synced is None:
            self._wait()
            grads = []
            for u in self._train_units:
                assert u.reducer is not None
                grad = u.reducer.sync_to_os()
                grad.div_(self.topology.n * self.accum_steps)
                grads.append(grad)
            self._synced = grads
        return self._synced

    def _require_full_step(self, what: str) -> None:
        self._check_usable()
        if self._micro != self.accum_steps:
            raise RuntimeError(
                f"{what} after {self._micro} micro-steps, expected accum_steps={self.accum_steps} "
                "(call engine(x) and engine.backward(loss) that many times first)"
            )

    def clip_grad_norm_(
        self, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
    ) -> torch.Tensor:
        """Clip the step's averaged gradient by its global norm across all shards (collective).

        Same result as ``torch.nn.utils.clip_grad_norm_`` on DDP's gradients: total norm over
        all trainable parameters, ``coef = min(1, max_norm / (norm + 1e-6))``. Call it after the
        step's last :meth:`backward`, before :meth:`step`; returns the total norm (before clipping).
        """
        self._require_full_step("clip_grad_norm_()")
        max_norm, norm_type = float(max_norm), float(norm_type)
        if not max_norm >= 0 or math.isnan(max_norm):
            raise ValueError(f"max_norm must be >= 0, got {max_norm}")
        if not norm_type > 0:
            raise ValueError(f"norm_type must be > 0 (or inf), got {norm_type}")
        grads = self._synced_grad()
        grad = grads[0] if len(grads) == 1 else torch.cat(grads)
        os_level, pg, topo = self.strategy.os, self.groups, self.topology
        group, size = {"N": (None, 1), "I": (pg.intra, topo.m), "G": (None, topo.n)}[os_level]
        if math.isinf(norm_type):
            local = grad.abs().max() if grad.numel() else grad.new_zeros(())
            total = local.clone()
            all_reduce(total, group, size, dist.ReduceOp.MAX)
        else:
            total = grad.abs().pow(norm_type).sum()
            all_reduce(total, group, size)
            total = total.pow(1.0 / norm_type)
        if error_if_nonfinite and not torch.isfinite(total):
            raise RuntimeError(
                f"the total norm of order {norm_type} of the gradients is non-finite ({total})"
            )
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef)
        return total

    def step(self) -> None:
        """Optimizer step at the accumulation boundary (t_syncg, update, t_syncp)."""
        self._require_full_step("step()")
        grads = self._synced_grad()
        unused: list[list[int]] = [[] for _ in grads]
        if self.find_unused_parameters:
            flags = torch.tensor(self._used_step, dtype=torch.uint8, device=grads[0].device)
            all_reduce(flags, None, self.topology.n, dist.ReduceOp.MAX)
            used = flags.tolist()
            unused = [[j for j, i in enumerate(u.index) if not used[i]] for u in self._train_units]
        self._opt.step(grads, unused)
        self._end_step()
        self.steps_done += 1

    def _end_step(self) -> None:
        for u in self._train_units:
            assert u.reducer is not None
            u.reducer.zero()
        self._synced = None
        self._micro = 0
        self._used_step = [False] * len(self._used_step)
        self._set_grads(None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the current step's accumulated gradients (e.g. to skip a step); not collective."""
        if self._sched is not None:
            self._sched.abort()
        self._broken = None
        self._in_backward = False
        self._end_step()

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

    # ---- safe access to full tensors
    @contextlib.contextmanager
    def gathered_parameters(
        self, with_grads: bool = False, writeback: bool = True
    ) -> Iterator[nn.Module]:
        """Context in which the module's parameters are full tensors (collective, as FSDP's
        ``summon_full_params`` / DeepSpeed's ``GatheredParameters``).

        With ``with_grads`` the parameters' ``.grad`` are the step's full averaged gradients
        (:meth:`full_gradients`). With ``writeback`` (default) changes made to the parameters
        inside the context are kept (every rank must make the same change).
        """
        self._check_usable()
        self._wait()
        grads = self._full_grad_units() if with_grads else None
        self._gather()
        if grads is not None:
            self._set_grads(
                [u.train.views(g) for u, g in zip(self._train_units, grads, strict=True)]  # type: ignore[union-attr]
            )
        try:
            yield self.module
        finally:
            if writeback:
                with torch.no_grad():
                    for buf in self._buffers_flat():
                        buf.writeback()
            if grads is not None:
                self._set_grads(None, placeholder=self._micro > 0)
            self._release()

    def full_gradients(self, padded: bool = False) -> torch.Tensor:
        """The step's gradient as the optimizer would get it now: summed over ranks and the
        micro-steps so far, divided by ``n·A`` (clipped if :meth:`clip_grad_norm_` ran); flat, in
        ``module.parameters()`` order. Collective; leaves the engine's state unchanged."""
        self._check_usable()
        parts = self._full_grad_units()
        if padded and len(parts) == 1:
            return parts[0]
        return self._assemble(parts)

    def _full_grad_units(self) -> list[torch.Tensor]:
        """Per trainable unit, its padded full averaged gradient (collective)."""
        self._wait()
        out = []
        for j, u in enumerate(self._train_units):
            assert u.reducer is not None
            if self._synced is not None:
                out.append(u.reducer.full_sum(self._synced[j]))
            else:
                out.append(u.reducer.full_sum(None).div_(self.topology.n * self.accum_steps))
        return out

    def _assemble(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """One flat tensor in ``module.parameters()`` order from per-unit full flat buffers."""
        if len(parts) == 1:
            return parts[0][: self._train_numel].clone()
        pieces: list[torch.Tensor | None] = [None] * len(self._train_names)
        for u, flat in zip(self._train_units, parts, strict=True):
            tb = u.train
            assert tb is not None
            for i, o, shape in zip(u.index, tb.offsets, tb.shapes, strict=True):
                pieces[i] = flat[o : o + shape.numel()]
        return torch.cat(pieces)  # type: ignore[arg-type]

    def full_parameters(self) -> torch.Tensor:
        """The trainable parameters, gathered, as one flat tensor in ``module.parameters()`` order.

        Collective for sharded ``p`` (every rank must call it). For tests and checkpoints.
        """
        self._wait()
        parts = []
        for u in self._train_units:
            tb = u.train
            assert tb is not None
            was = tb.gathered
            tb.gather(self.global_comm)
            parts.append(tb.full.detach().clone())
            if not was:
                tb.release()
        return self._assemble(parts)

    # ---- checkpoints
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """This rank's sharded checkpoint (see :mod:`paro.checkpoint`); no communication."""
        if args or kwargs:
            raise TypeError(
                "engine.state_dict() takes no arguments: it returns the engine's sharded "
                "checkpoint and cannot be nested in a parent module's state_dict()"
            )
        return _ckpt.sharded_state_dict(self)

    def full_state_dict(self) -> dict[str, Any]:
        """The consolidated checkpoint: ``"model"`` as ``module.state_dict()``, plus the optimizer
        state per parameter (collective)."""
        return _ckpt.full_state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:  # type: ignore[override]
        """Load a sharded dict of this rank (same layout) or a full dict (any layout; collective)."""
        if isinstance(state_dict, dict) and state_dict.get("format") == _ckpt.FULL:
            _ckpt.load_full(self, state_dict)
        else:
            _ckpt.load_sharded(self, state_dict)

    def save_checkpoint(self, directory: str | os.PathLike[str], full: bool = False) -> None:
        """Sharded per-rank files (+ ``full.pt`` with ``full=True``), atomic (collective)."""
        _ckpt.save(self, directory, full=full)

    def load_checkpoint(self, directory: str | os.PathLike[str]) -> str:
        """Load a checkpoint directory saved under any strategy and world size (collective)."""
        return _ckpt.load(self, directory)

    # ---- inspection
    def state_bytes(self) -> dict[str, int]:
        """Persistent per-rank bytes: parameter shards, gradient accumulator, optimizer states.

        Optimizer states count the per-element tensors (same numel as the shard, e.g. Adam's m
        and v); scalar counters such as Adam's ``step`` are O(1) and excluded.
        """
        return {
            "params": sum(b.shard_bytes() for b in self._buffers_flat()),
            "grads": sum(u.reducer.acc_bytes() for u in self._train_units if u.reducer),
            "optimizer_states": self._opt.state_bytes(),
        }
