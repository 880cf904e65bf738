"""The PaRO-DP engine: one sharded data-parallel engine for every (p, g, os) strategy (paper §3.5).

The engine is the composition of four small parts (torchtitan style):

- :mod:`paro.gathering` — :class:`~paro.gathering.ParameterBuffer`: the p-level parameter shard,
  t_param gathers and releases, the module's parameters as safe views (:mod:`paro.views`);
- :mod:`paro.reduction` — :class:`~paro.reduction.GradientReducer`: t_gradient per micro-step and
  t_syncg at the boundary;
- :mod:`paro.sharded_optim` — :class:`~paro.sharded_optim.ShardedOptimizer`: the update of the
  os-level slice (an alias of the parameter shard), t_syncp, unused parameters;
- :mod:`paro.checkpoint` — sharded and full checkpoints, resharding.

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
from paro.gathering import ParameterBuffer
from paro.layout import all_reduce
from paro.reduction import GradientReducer
from paro.sharded_optim import OptimizerFactory, ShardedOptimizer
from paro.strategy import Strategy
from paro.topology import ParoGroups, build_groups
from paro.views import is_sharded, set_grad

__all__ = ["ParoDataParallel"]

_DIRECT_BACKWARD = (
    "a gradient reached the output of a paro engine outside engine.backward(loss) (plain "
    "loss.backward() or torch.autograd.grad): the engine must gather sharded parameters before "
    "backward and reduce gradients after it. Run the forward again and call engine.backward(loss)."
)


def _output_tensors(out: Any) -> Iterator[torch.Tensor]:
    stack, seen = [out], 0
    while stack and seen < 10_000:
        seen += 1
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            yield o
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)


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
        frozen = [(n, p) for n, p in named if not p.requires_grad]
        if not trainable:
            raise ValueError("the module has no trainable parameters (requires_grad=True)")
        self._train = ParameterBuffer(
            [p for _, p in trainable], [n for n, _ in trainable], s.p, groups, str(s), param_dtype
        )
        self._frozen = (
            ParameterBuffer(
                [p for _, p in frozen], [n for n, _ in frozen], s.p, groups, str(s), param_dtype
            )
            if frozen
            else None
        )
        self._reducer = GradientReducer(self._train, s, global_comm)
        self._opt = ShardedOptimizer(
            self._train, s, optimizer_factory, global_comm, assume_elementwise_optimizer
        )
        self.optimizer = self._opt.optimizer
        self._masters = [self._opt.master]
        for _, p in named:
            p._paro_owner = True
        self._used_micro = [False] * len(trainable)
        self._used_step = [False] * len(trainable)
        for i, (_, p) in enumerate(trainable):
            p.register_post_accumulate_grad_hook(self._used_hook(i))
        self._micro = 0
        self._synced: torch.Tensor | None = None
        self._in_backward = False
        self._broken: str | None = None
        self.steps_done = 0
        if self.topology.n > 1:
            self._sync_buffers()

    # ---- helpers
    def _buffers_flat(self) -> list[ParameterBuffer]:
        return [self._train] + ([self._frozen] if self._frozen is not None else [])

    def _used_hook(self, i: int) -> Callable[[torch.Tensor], None]:
        def hook(_p: torch.Tensor) -> None:
            self._used_micro[i] = True

        return hook

    def _grad_info(self, name: str) -> dict[str, str]:
        return {
            "name": name,
            "strategy": str(self.strategy),
            "level": self.strategy.g,
            "hint": "use engine.clip_grad_norm_() / engine.full_gradients()",
        }

    def _set_grads(self, views: list[torch.Tensor] | None, placeholder: bool = False) -> None:
        tb = self._train
        for i, p in enumerate(tb.params):
            if placeholder:
                set_grad(p, None, self._grad_info(tb.names[i]))
            else:
                set_grad(p, None if views is None else views[i])

    def _gather(self) -> None:
        for buf in self._buffers_flat():
            buf.gather(self.global_comm)

    def _release(self) -> None:
        for buf in self._buffers_flat():
            buf.release()

    def _sync_buffers(self) -> None:
        bufs = [b for b in self.module.buffers() if b.numel() > 0]
        if not self.broadcast_buffers or self.topology.n == 1 or not bufs:
            return
        for b in bufs:
            dist.broadcast(b.data, src=0)

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise RuntimeError(self._broken)

    def _require_boundary(self, what: str) -> None:
        self._check_usable()
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
        self._gather()
        try:
            out = self.module(*args, **kwargs)
        finally:
            if not torch.is_grad_enabled() or self.reshard_after_forward:
                self._release()
        if torch.is_grad_enabled():
            for t in _output_tensors(out):
                if t.requires_grad and t.grad_fn is not None:
                    t.register_hook(self._guard_hook)
        return out

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-step, then the gradient reduction of the g level (t_gradient)."""
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
        self._gather()
        views = self._reducer.begin_micro()
        self._set_grads(views)
        self._used_micro = [False] * len(self._used_micro)
        self._in_backward = True
        try:
            loss.backward()
            unused = [i for i, u in enumerate(self._used_micro) if not u]
            if unused and not self.find_unused_parameters:
                names = [self._train.names[i] for i in unused]
                raise RuntimeError(
                    f"trainable parameters received no gradient in this micro-step: {names}. "
                    "Pass find_unused_parameters=True to ParoDataParallel (as with DDP) to leave "
                    "them unchanged, or freeze them (requires_grad=False) before wrapping"
                )
        except BaseException:
            self._in_backward = False
            self._set_grads(None)
            self._release()
            self._reducer.abort_micro()
            self._broken = (
                "an exception interrupted engine.backward(); this step's accumulated gradient is "
                "undefined: call engine.zero_grad() to drop the step and continue"
            )
            raise
        self._in_backward = False
        self._set_grads(None, placeholder=True)
        self._release()
        self._reducer.end_micro()
        self._used_step = [a or b for a, b in zip(self._used_step, self._used_micro, strict=True)]
        self._micro += 1

    # ---- boundary
    def _synced_grad(self) -> torch.Tensor:
        if self._synced is None:
            grad = self._reducer.sync_to_os()
            grad.div_(self.topology.n * self.accum_steps)
            self._synced = grad
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
        grad = self._synced_grad()
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
        grad.mul_(coef)
        return total

    def step(self) -> None:
        """Optimizer step at the accumulation boundary (t_syncg, update, t_syncp)."""
        self._require_full_step("step()")
        grad = self._synced_grad()
        unused: list[int] = []
        if self.find_unused_parameters:
            flags = torch.tensor(self._used_step, dtype=torch.uint8, device=grad.device)
            all_reduce(flags, None, self.topology.n, dist.ReduceOp.MAX)
            unused = [i for i, f in enumerate(flags.tolist()) if not f]
        self._opt.step(grad, unused)
        self._end_step()
        self.steps_done += 1

    def _end_step(self) -> None:
        self._reducer.zero()
        self._synced = None
        self._micro = 0
        self._used_step = [False] * len(self._used_step)
        self._set_grads(None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the current step's accumulated gradients (e.g. to skip a step); not collective."""
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
        grads = self.full_gradients(padded=True) if with_grads else None
        self._gather()
        if grads is not None:
            self._set_grads(self._train.views(grads))
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
        if self._synced is not None:
            out = self._reducer.full_sum(self._synced)
        else:
            out = self._reducer.full_sum(None).div_(self.topology.n * self.accum_steps)
        return out if padded else out[: self._train.numel].clone()

    def full_parameters(self) -> torch.Tensor:
        """The trainable parameters, gathered, as one flat tensor in ``module.parameters()`` order.

        Collective for sharded ``p`` (every rank must call it). For tests and checkpoints.
        """
        tb = self._train
        was = tb.gathered
        tb.gather(self.global_comm)
        out = tb.full[: tb.numel].detach().clone()
        if not was:
            tb.release()
        return out

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
            "grads": self._reducer.acc_bytes(),
            "optimizer_states": self._opt.state_bytes(),
        }
