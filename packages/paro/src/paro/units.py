"""Per-layer (per-module) gathering with prefetch and release, and per-layer gradient reduction
overlapping backward (FSDP2 / DeepSpeed ZeRO-3 style), for :class:`~paro.engine.ParoDataParallel`.

The model is cut into *units*: the layer units (``wrap=``: by default the children of the model's
largest ``nn.ModuleList``, e.g. a Hugging Face model's decoder layers) and the *root* unit (every
other parameter, and any parameter shared between units, e.g. tied embeddings). Each unit owns its
own :class:`~paro.gathering.ParameterBuffer` (trainable; and one for frozen parameters) and
:class:`~paro.reduction.GradientReducer`, so every unit is sharded, gathered and reduced exactly as
the whole model is in the whole-model mode (``wrap=None``).

Schedule (:class:`LayerScheduler`), one micro-step:

- forward: the root unit is gathered when the engine's forward starts; a forward pre-hook on each
  layer unit waits for its gather (or starts it) and starts the gather of the next unit in
  execution order (recorded in the first forward); a forward hook releases it afterwards when
  ``reshard_after_forward`` and registers a multi-grad hook on its outputs;
- backward: that hook fires when the first gradient reaches the unit's outputs, before any of the
  unit's backward runs: it waits for the unit's gather, allocates the unit's full gradient buffer
  (its parameters' ``.grad`` are views of it) and starts the gather of the previous unit; when all
  of the unit's parameters have their gradient accumulated (``register_post_accumulate_grad_hook``)
  the unit's t_gradient reduction is queued and its gathered parameters are released;
- :meth:`ParoDataParallel.backward` reduces the units whose gradients never completed (unused
  parameters), waits for every queued collective, then reduces the root unit.

Every collective of this schedule runs on one communication thread per engine, in the order the
compute thread queued them (FIFO), so all ranks issue the same collectives in the same order, while
the compute thread runs the next layer's forward or backward (gloo and torch release the GIL).
Collectives outside forward/backward (t_syncg, t_syncp, clipping, checkpoints) run on the compute
thread after the queue is drained. Like FSDP2, this assumes that every rank runs the same layer
units in the same order in every micro-step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from paro.gathering import ParameterBuffer
from paro.reduction import GradientReducer
from paro.views import set_grad

__all__ = ["LayerScheduler", "Unit", "find_units", "output_tensors", "partition"]

WrapSpec = Any  # "auto" | None | type | tuple[type, ...] | list[nn.Module]


def output_tensors(out: Any) -> Iterator[torch.Tensor]:
    """Tensors in a (nested) module output: tensors, dicts (HF ModelOutput), lists, tuples."""
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


@dataclass(eq=False)
class Unit:
    """One gathering/reduction unit: a layer module (or the root: ``module=None``)."""

    name: str
    module: nn.Module | None
    train: ParameterBuffer | None = None
    frozen: ParameterBuffer | None = None
    reducer: GradientReducer | None = None
    index: list[int] = field(default_factory=list)  # global trainable indices of train.params
    # per micro-step state (compute thread)
    pending: Future | None = None
    bwd_ready: bool = False
    launched: bool = False
    count: int = 0

    def buffers(self) -> list[ParameterBuffer]:
        return [b for b in (self.train, self.frozen) if b is not None]

    def is_gathered(self) -> bool:
        return all(b.gathered for b in self.buffers())

    def reset_micro(self) -> None:
        self.bwd_ready = self.launched = False
        self.count = 0


def find_units(module: nn.Module, wrap: WrapSpec) -> list[tuple[str, nn.Module]]:
    """The layer units named by ``wrap`` as ``(qualified name, module)``, in module order.

    ``"auto"``: the children of the largest ``nn.ModuleList`` (by parameter count; none: no layer
    units); ``None``: none (whole-model gathering); a module class or tuple of classes: the
    outermost submodules of that class; a list of submodules (not nested in one another).
    """
    if wrap is None:
        return []
    named = [(n, m) for n, m in module.named_modules() if m is not module]
    if isinstance(wrap, str):
        if wrap != "auto":
            raise ValueError(f"wrap must be 'auto', None, a module class or a list, got {wrap!r}")
        lists = [(n, m) for n, m in named if isinstance(m, nn.ModuleList) and len(m)]
        if not lists:
            return []
        size = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        best_name, best = max(lists, key=lambda nm: size(nm[1]))  # first of the largest
        return [(f"{best_name}.{i}", m) for i, m in enumerate(best)]
    if isinstance(wrap, type) or (
        isinstance(wrap, tuple) and wrap and all(isinstance(c, type) for c in wrap)
    ):
        out: list[tuple[str, nn.Module]] = []
        for n, m in named:
            if isinstance(m, wrap) and not any(n.startswith(o + ".") for o, _ in out):
                out.append((n, m))
        if not out:
            raise ValueError(f"wrap={wrap!r}: no submodule of that class in the module")
        return out
    if isinstance(wrap, (list, tuple)):
        names = {id(m): n for n, m in named}
        out = []
        for m in wrap:
            if not isinstance(m, nn.Module):
                raise TypeError(f"wrap list entries must be nn.Modules, got {type(m).__name__}")
            if id(m) not in names:
                raise ValueError(
                    f"wrap: a {type(m).__name__} that is not a submodule of the wrapped module "
                    "(the module itself cannot be a unit: use wrap=None)"
                )
            out.append((names[id(m)], m))
        out.sort(key=lambda nm: [n for n, _ in named].index(nm[0]))
        if len({n for n, _ in out}) != len(out):
            raise ValueError("wrap: a module is listed twice")
        for a, _ in out:
            for b, _ in out:
                if b.startswith(a + "."):
                    raise ValueError(f"wrap: units must not be nested ({b!r} is inside {a!r})")
        return out
    raise TypeError(
        f"wrap must be 'auto', None, a module class, a tuple of classes or a list of submodules, "
        f"got {type(wrap).__name__}"
    )


def partition(module: nn.Module, units: list[tuple[str, nn.Module]]) -> dict[int, int]:
    """Owner of each parameter (``id`` -> unit index, 0 = root, i + 1 = ``units[i]``).

    A parameter is owned by a layer unit only if every name it has in the module lies inside that
    unit; parameters outside all units or shared by several (tied weights) belong to the root.
    """
    prefixes = [n + "." for n, _ in units]
    owners: dict[int, set[int]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        where = next((i + 1 for i, pre in enumerate(prefixes) if name.startswith(pre)), 0)
        owners.setdefault(id(p), set()).add(where)
    return {pid: (next(iter(s)) if len(s) == 1 else 0) for pid, s in owners.items()}


class LayerScheduler:
    """Hooks and the communication thread of the per-layer schedule (module docstring)."""

    def __init__(
        self,
        units: list[Unit],
        global_comm: str,
        *,
        prefetch: bool,
        overlap: bool,
        in_backward: Callable[[], bool],
        direct_backward_error: str,
    ) -> None:
        self.units = units
        self.global_comm = global_comm
        self.prefetch = prefetch
        self.overlap = overlap
        self._in_backward = in_backward
        self._direct_error = direct_backward_error
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paro-comm")
        self._jobs: list[Future] = []
        self._reductions: list[Future] = []  # queued t_gradient reductions, oldest first
        self.order: list[Unit] = []
        self._pos: dict[int, int] = {}
        self._recording = True
        self.active = False
        self.reshard = True
        self.handles = []
        for u in units:
            assert u.module is not None
            self.handles.append(u.module.register_forward_pre_hook(self._pre_forward(u)))
            self.handles.append(u.module.register_forward_hook(self._post_forward(u)))

    # ---- communication thread
    def _submit(self, fn: Callable[[], Any]) -> Future:
        f = self._pool.submit(fn)
        self._jobs.append(f)
        return f

    def _fetch(self, u: Unit) -> None:
        """Queue the gather of ``u`` (nothing if gathered or already queued)."""
        if u.pending is not None or all(b.gathered or b.fetched for b in u.buffers()):
            return
        bufs, comm = u.buffers(), self.global_comm

        def job() -> None:
            for b in bufs:
                b.fetch(comm)

        u.pending = self._submit(job)

    def ensure(self, u: Unit) -> None:
        """Wait for ``u``'s gather (queueing it if needed) and bind its parameters."""
        if u.pending is None and not u.is_gathered():
            self._fetch(u)
        if u.pending is not None:
            f, u.pending = u.pending, None
            f.result()
        for b in u.buffers():
            b.bind()

    def drain(self) -> None:
        """Wait for every queued collective; re-raise the first failure."""
        jobs, self._jobs = self._jobs, []
        self._reductions = []
        err: BaseException | None = None
        for f in jobs:
            try:
                f.result()
            except BaseException as e:  # re-raised below once all have finished
                err = err or e
        if err is not None:
            raise err

    def release(self, u: Unit) -> None:
        for b in u.buffers():
            b.release()

    def _neighbour(self, u: Unit, step: int) -> Unit | None:
        pos = self._pos.get(id(u))
        if pos is None or not 0 <= pos + step < len(self.order):
            return None
        return self.order[pos + step]

    # ---- forward
    def begin_forward(self, reshard: bool) -> None:
        self.active = True
        self.reshard = reshard

    def end_forward(self, release: bool) -> None:
        """Drain the queue; release the units (all with ``release``, else prefetched ones that
        forward did not reach)."""
        self.active = False
        if self._recording and self.order:
            self._recording = False
            self._pos = {id(u): i for i, u in enumerate(self.order)}
        err: BaseException | None = None
        for u in self.units:  # prefetches forward did not use (reductions may still run)
            if u.pending is not None:
                f, u.pending = u.pending, None
                try:
                    f.result()
                except BaseException as e:  # re-raised once every unit is released
                    err = err or e
            if release or any(b.fetched and not b.gathered for b in u.buffers()):
                self.release(u)
        if err is not None:
            raise err

    def _pre_forward(self, u: Unit) -> Callable[..., None]:
        def hook(_mod: nn.Module, _args: Any) -> None:
            if not self.active:
                return
            if self._recording and all(o is not u for o in self.order):
                self.order.append(u)
            self.ensure(u)
            if self.prefetch and not self._recording:
                nxt = self._neighbour(u, 1)
                if nxt is not None:
                    self._fetch(nxt)

        return hook

    def _post_forward(self, u: Unit) -> Callable[..., None]:
        def hook(_mod: nn.Module, _args: Any, out: Any) -> None:
            if not self.active:
                return
            grad = torch.is_grad_enabled()
            if grad:
                ts = [t for t in output_tensors(out) if t.requires_grad and t.grad_fn is not None]
                if ts:
                    torch.autograd.graph.register_multi_grad_hook(
                        ts, self._pre_backward(u), mode="any"
                    )
            if not grad or self.reshard:
                self.release(u)

        return hook

    # ---- backward
    def _pre_backward(self, u: Unit) -> Callable[[torch.Tensor], None]:
        def hook(_grad: torch.Tensor) -> None:
            if not self._in_backward():
                raise RuntimeError(self._direct_error)
            if u.bwd_ready or u.launched:
                return
            self.ensure(u)
            if u.reducer is not None and u.train is not None:
                # back-pressure: at most one earlier unit's reduction still in flight, so at
                # most two units' full gradient buffers exist at once
                while len(self._reductions) > 1:
                    self._reductions.pop(0).result()
                views = u.reducer.begin_micro()
                for p, v in zip(u.train.params, views, strict=True):
                    set_grad(p, v)
            u.bwd_ready = True
            if self.prefetch:
                prev = self._neighbour(u, -1)
                if prev is not None and not (prev.bwd_ready or prev.launched):
                    self._fetch(prev)

        return hook

    def grad_ready(self, u: Unit) -> None:
        """One of ``u``'s trainable parameters has its gradient accumulated."""
        u.count += 1
        if u.train is not None and u.count == len(u.train.params):
            self.finish(u)

    def finish(self, u: Unit) -> None:
        """Queue ``u``'s t_gradient reduction and release its parameters."""
        if u.launched or u.train is None or u.reducer is None:
            return
        u.launched = True
        if not u.bwd_ready:  # gradients reached the parameters around the unit's outputs
            views = u.reducer.begin_micro()
            with torch.no_grad():
                for p, v in zip(u.train.params, views, strict=True):
                    g = p.grad
                    if g is not None and g.data_ptr() != v.data_ptr():
                        v.add_(g)
        for p in u.train.params:
            set_grad(p, None)
        self.reduce_async(u.reducer)
        self.release(u)

    def reduce_async(self, reducer: GradientReducer) -> None:
        """Queue ``reducer``'s t_gradient (``overlap``; else run it and wait)."""
        if reducer.s.g == "N":
            return
        f = self._submit(reducer.end_micro)
        self._reductions.append(f)
        if not self.overlap:
            f.result()

    def end_backward(self) -> None:
        """Queue the reductions of the units whose gradients did not complete (unused
        parameters) and release every unit; queued reductions may still run (the engine waits
        for them before its next collective on the compute thread)."""
        try:
            for u in reversed(self.units):
                if u.train is not None and not u.launched:
                    self.finish(u)
        finally:
            for u in self.units:
                if u.pending is not None:  # a prefetch backward did not use
                    f, u.pending = u.pending, None
                    with contextlib.suppress(BaseException):
                        f.result()
                self.release(u)
                u.reset_micro()

    def abort(self) -> None:
        """After a failure: wait for queued work (errors dropped), release everything."""
        with contextlib.suppress(BaseException):  # the original exception is being raised
            self.drain()
        for u in self.units:
            u.pending = None
            if u.train is not None:
                for p in u.train.params:
                    set_grad(p, None)
            if u.reducer is not None:
                u.reducer.abort_micro()
            self.release(u)
            u.reset_micro()
        self.active = False

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self._pool.shutdown(wait=True)
