"""Safe views: what a user can reach of a sharded module between steps (issue 16).

The engine owns flat buffers; a module's parameters are the *same* ``nn.Parameter`` objects the
user created (identity, names, tied weights and hooks are kept) and switch between two states:

- **gathered** (inside the engine's forward/backward, in :meth:`ParoDataParallel.gathered_parameters`,
  and always for p = N): ``param.data`` is a view of the gathered flat buffer; the parameter is a plain
  ``nn.Parameter``.
- **sharded** (between steps when p ∈ {I, G}): ``param.data`` is a valid one-element tensor expanded
  to the parameter's shape (never a view of freed storage) and the object's class is switched to a
  subclass whose ``__torch_function__`` raises :class:`ShardedTensorError` naming the API to use.
  Shape, dtype, device, ``requires_grad``, ``grad`` and hashing keep working, so
  ``named_parameters()``, ``zero_grad()``, optimizers' param-group bookkeeping and printing do.

Gradients between :meth:`ParoDataParallel.backward` and :meth:`ParoDataParallel.step` are reduced
to the gradient level ``g`` (and not yet averaged, for every strategy): ``param.grad`` is a
:class:`ShardedGradient` placeholder that raises the same way and points to
:meth:`ParoDataParallel.clip_grad_norm_` / :meth:`ParoDataParallel.full_gradients`.

Storage freed by the engine (``untyped_storage().resize_(0)``) is only ever referenced by the
engine's own flat buffers and by tensors autograd saved for backward, never by anything reachable
through the module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = [
    "ShardedGradient",
    "ShardedTensorError",
    "is_sharded",
    "set_gathered",
    "set_grad",
    "set_sharded",
]


class ShardedTensorError(RuntimeError):
    """A parameter or gradient of a paro engine was read while it is sharded."""


_TB = torch._C.TensorBase
_META_DESCRIPTORS = {
    getattr(_TB, name)
    for name in (
        "shape",
        "dtype",
        "device",
        "requires_grad",
        "is_leaf",
        "ndim",
        "grad",
        "layout",
        "is_cuda",
        "is_meta",
        "is_sparse",
        "is_quantized",
        "is_nested",
        "is_mkldnn",
        "is_xla",
        "is_mps",
        "grad_fn",
        "_backward_hooks",
        "_post_accumulate_grad_hooks",
        "names",
        "itemsize",
    )
    if hasattr(_TB, name)
}
_META_METHODS = {
    torch.Tensor.__hash__,
    torch.Tensor.size,
    torch.Tensor.dim,
    torch.Tensor.numel,
    torch.Tensor.nelement,
    torch.Tensor.element_size,
    torch.Tensor.is_floating_point,
    torch.Tensor.is_complex,
    torch.Tensor.get_device,
    torch.Tensor.register_hook,
    torch.Tensor.register_post_accumulate_grad_hook,
}


def _is_meta_access(func: Any) -> bool:
    if func in _META_METHODS:
        return True
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    if owner in _META_DESCRIPTORS and name == "__get__":
        return True
    # assigning .grad (zero_grad(set_to_none=True), a user's p.grad = None) is allowed
    return owner is getattr(_TB, "grad", None) and name in ("__set__", "__delete__")


def _func_name(func: Any) -> str:
    owner = getattr(func, "__self__", None)
    if owner is not None and getattr(owner, "__name__", None):
        return f"{owner.__name__}.{getattr(func, '__name__', func)}"
    return getattr(func, "__qualname__", getattr(func, "__name__", str(func)))


_PARAM_HELP = (
    "{what} of a paro engine (strategy {strategy}, parameters sharded at level {level}) is not "
    "materialised between steps, so {op} cannot read it. Use `with engine.gathered_parameters(): "
    "...` (collective: every rank must enter it) to read or change full parameters, "
    "engine.full_state_dict() / engine.state_dict() to save them, or run the module through the "
    "engine (engine(x))."
)
_GRAD_HELP = (
    "the gradient of {name} is held by the paro engine (strategy {strategy}: reduced to level "
    "{level} and not yet averaged) between engine.backward() and engine.step(), so {op} cannot "
    "read it. Use engine.clip_grad_norm_(max_norm) to clip by global norm, engine.full_gradients() "
    "or `with engine.gathered_parameters(with_grads=True): ...` (collective) to read full averaged "
    "gradients."
)


class _ShardedMixin:
    """``__torch_function__`` that lets metadata through and raises on anything touching values."""

    _paro_info: dict[str, str]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_meta_access(func):
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func is torch.Tensor.__repr__ or func is torch.Tensor.__format__:
            t = args[0]
            info = t._paro_info
            with torch._C.DisableTorchFunctionSubclass():
                shape = tuple(t.shape)
            return f"<{info['kind']} {info.get('name', '')} shape={shape} ({info['strategy']}): {info['hint']}>"
        info = next(
            (a._paro_info for a in _flatten_args(args, kwargs) if isinstance(a, _ShardedMixin)),
            cls._default_info(),
        )
        op = f"`{_func_name(func)}`"
        template = _GRAD_HELP if info["kind"] == "sharded gradient" else _PARAM_HELP
        raise ShardedTensorError(template.format(op=op, **info))

    @staticmethod
    def _default_info() -> dict[str, str]:
        return {
            "kind": "sharded tensor",
            "what": "a tensor",
            "name": "",
            "strategy": "?",
            "level": "?",
            "hint": "",
        }


def _flatten_args(args: Any, kwargs: dict) -> list[Any]:
    out: list[Any] = []
    stack = [*args, *kwargs.values()]
    while stack:
        a = stack.pop()
        if isinstance(a, (list, tuple)):
            stack.extend(a)
        else:
            out.append(a)
    return out


class ShardedGradient(_ShardedMixin, torch.Tensor):
    """Placeholder ``.grad`` between :meth:`~ParoDataParallel.backward` and ``step``."""


_SHARDED_CLASSES: dict[type, type] = {}


def _sharded_class(cls: type) -> type:
    if issubclass(cls, _ShardedMixin):
        return cls
    if cls not in _SHARDED_CLASSES:
        _SHARDED_CLASSES[cls] = type(f"Sharded{cls.__name__}", (_ShardedMixin, cls), {})
    return _SHARDED_CLASSES[cls]


def is_sharded(t: torch.Tensor) -> bool:
    """True when ``t`` is a sharded placeholder (parameter or gradient)."""
    return isinstance(t, _ShardedMixin)


def _placeholder(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    fill = float("nan") if dtype.is_floating_point or dtype.is_complex else 0
    return torch.full((), fill, dtype=dtype, device=device).expand(shape)


def set_sharded(p: nn.Parameter, base_class: type, info: dict[str, str]) -> None:
    """Detach ``p`` from engine storage: a valid expanded placeholder and a raising class."""
    with torch._C.DisableTorchFunctionSubclass():
        shape, dtype, device = p.shape, p.dtype, p.device
        p.data = _placeholder(shape, dtype, device)
    p.__class__ = _sharded_class(base_class)
    p._paro_info = dict(info, kind="sharded parameter", what=f"parameter {info.get('name', '')!r}")


def set_gathered(p: nn.Parameter, base_class: type, view: torch.Tensor) -> None:
    """Make ``p`` a plain parameter whose data is ``view`` (of the gathered flat buffer)."""
    if type(p) is not base_class:
        p.__class__ = base_class
    with torch._C.DisableTorchFunctionSubclass():
        g = p.grad
        if g is not None and (g.device != view.device or g.dtype != view.dtype):
            p.grad = None
        p.data = view


def set_grad(
    p: nn.Parameter, grad: torch.Tensor | None, info: dict[str, str] | None = None
) -> None:
    """Set ``p.grad`` to ``grad`` (a real tensor), ``None``, or (``info`` given) a placeholder."""
    with torch._C.DisableTorchFunctionSubclass():
        if info is not None:
            ph = _placeholder(p.shape, p.dtype, p.device).as_subclass(ShardedGradient)
            ph._paro_info = dict(info, kind="sharded gradient")
            p.grad = ph
        else:
            p.grad = grad
