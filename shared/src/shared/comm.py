"""Communication accounting: record every torch.distributed op issued inside a block.

>>> with record_comm() as log:                       # doctest: +SKIP
...     dist.all_reduce(t)
...     dist.send(x, dst=1)
>>> log.total_bytes(), log.by_kind()

What is recorded, per op issued by *this* process: the kind, the global ranks of the group, the
peer (point-to-point), the dtype, and ``nbytes``, the size of the data this rank hands to the op:

=========================  ==============================================================
op                         ``nbytes``
=========================  ==============================================================
all_reduce, reduce,        the tensor
broadcast
all_gather(_into_tensor)   this rank's input (its contribution), not the gathered output
reduce_scatter(_tensor)    the full input (all ranks' chunks), not the reduced output
all_to_all(_single)        the full input; ``sent_bytes`` excludes the chunk kept locally
gather, scatter            the tensor passed as ``tensor``
send/isend, recv/irecv     the tensor (also inside ``batch_isend_irecv``)
barrier                    0
=========================  ==============================================================

:meth:`CommOp.ring_bytes` gives the bytes this rank puts on the wire under the classic ring
algorithms (all_reduce ``2(n-1)/n``, all_gather ``(n-1)``, reduce_scatter ``(n-1)/n`` ...), the
model cost analyses use; it is a model, labelled as such.

How: the public functions of ``torch.distributed`` are wrapped (once per process, on the first
:func:`record_comm` or :func:`install_comm_hooks`; the wrappers only forward when no recorder is
active). A library that stores a reference to a torch.distributed function when it starts (as
DeepSpeed's communication backend does in ``deepspeed.init_distributed``) only calls the wrappers
if they were installed before: call :func:`install_comm_hooks` first (:func:`shared.spawn` does it
in every rank). Ops issued from inside another recorded op (e.g. the
sends inside ``batch_isend_irecv``) are attributed to the outermost op only. Functional collectives
(``torch.distributed._functional_collectives``, used by DTensor/FSDP2) are not seen.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d

__all__ = ["CommLog", "CommOp", "install_comm_hooks", "record_comm"]

COLLECTIVES = (
    "all_reduce",
    "reduce",
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "all_to_all",
    "all_to_all_single",
    "gather",
    "scatter",
    "barrier",
)
POINT_TO_POINT = ("send", "recv", "isend", "irecv")


@dataclass(frozen=True)
class CommOp:
    """One recorded op. ``group_ranks`` are global ranks; ``peer`` is global (point-to-point)."""

    kind: str
    nbytes: int
    group_ranks: tuple[int, ...]
    rank: int
    peer: int | None = None
    dtype: str | None = None
    sent_bytes: int | None = None
    async_op: bool = False

    @property
    def group_size(self) -> int:
        return len(self.group_ranks)

    def ring_bytes(self) -> float:
        """Bytes this rank sends under the ring algorithm of its kind (a model, not a measurement)."""
        n, b = self.group_size, self.nbytes
        if self.kind in ("send", "isend"):
            return float(b)
        if self.kind in ("recv", "irecv", "barrier") or n <= 1:
            return 0.0
        if self.kind == "all_reduce":
            return 2.0 * (n - 1) / n * b
        if self.kind in ("all_gather", "all_gather_into_tensor"):
            return float((n - 1) * b)
        if self.kind in ("reduce_scatter", "reduce_scatter_tensor"):
            return (n - 1) / n * b
        if self.kind in ("all_to_all", "all_to_all_single"):
            return float(self.sent_bytes if self.sent_bytes is not None else (n - 1) / n * b)
        if self.kind in ("broadcast", "reduce"):
            # pipelined ring/chain: every rank but one forwards the whole tensor once
            return float(b)
        if self.kind in ("gather", "scatter"):
            return (n - 1) / n * b
        raise ValueError(f"no ring model for {self.kind!r}")  # pragma: no cover


@dataclass
class CommLog:
    """The ops recorded inside one :func:`record_comm` block, in issue order."""

    ops: list[CommOp] = field(default_factory=list)

    def filter(
        self,
        kind: str | tuple[str, ...] | None = None,
        group: tuple[int, ...] | list[int] | None = None,
    ) -> list[CommOp]:
        """Ops of the given kind(s) and/or exact group (global ranks)."""
        kinds = (kind,) if isinstance(kind, str) else kind
        g = tuple(group) if group is not None else None
        return [
            o
            for o in self.ops
            if (kinds is None or o.kind in kinds) and (g is None or o.group_ranks == g)
        ]

    def total_bytes(
        self,
        kind: str | tuple[str, ...] | None = None,
        group: tuple[int, ...] | list[int] | None = None,
    ) -> int:
        """Sum of ``nbytes`` over :meth:`filter`."""
        return sum(o.nbytes for o in self.filter(kind, group))

    def by_kind(self) -> dict[str, dict[str, int]]:
        """``{kind: {"count": n, "bytes": b}}``."""
        out: dict[str, dict[str, int]] = {}
        for o in self.ops:
            d = out.setdefault(o.kind, {"count": 0, "bytes": 0})
            d["count"] += 1
            d["bytes"] += o.nbytes
        return out

    def clear(self) -> None:
        self.ops.clear()


# --------------------------------------------------------------------------- machinery

_lock = threading.Lock()
_active: list[CommLog] = []
_local = threading.local()
_originals: dict[str, Callable[..., Any]] = {}
_wrappers: dict[str, Callable[..., Any]] = {}


def _nbytes(t: Any) -> int:
    if isinstance(t, torch.Tensor):
        return t.numel() * t.element_size()
    if isinstance(t, (list, tuple)):
        return sum(_nbytes(x) for x in t)
    return 0


def _dtype(t: Any) -> str | None:
    if isinstance(t, torch.Tensor):
        return str(t.dtype).removeprefix("torch.")
    if isinstance(t, (list, tuple)) and t:
        return _dtype(t[0])
    return None


def _group_ranks(group: Any) -> tuple[int, ...]:
    if group is None or group is c10d.GroupMember.WORLD:
        return tuple(range(dist.get_world_size()))
    return tuple(dist.get_process_group_ranks(group))


def _peer(a: dict[str, Any], key: str, group_ranks: tuple[int, ...]) -> int | None:
    if a.get(key) is not None:
        return int(a[key])
    gkey = f"group_{key}"
    if a.get(gkey) is not None:
        return group_ranks[int(a[gkey])]
    return None


def _a2a_sent(a: dict[str, Any], kind: str, group_ranks: tuple[int, ...]) -> int | None:
    me = group_ranks.index(dist.get_rank()) if dist.get_rank() in group_ranks else None
    if me is None:
        return None
    if kind == "all_to_all":
        chunks = a["input_tensor_list"]
        return sum(_nbytes(c) for i, c in enumerate(chunks) if i != me)
    inp = a["input"]
    splits = a.get("input_split_sizes")
    n = len(group_ranks)
    rows = inp.shape[0] if inp.dim() else 1
    per_row = _nbytes(inp) // max(rows, 1)
    if splits is None:
        own = rows // n
    else:
        own = int(splits[me])
    return _nbytes(inp) - own * per_row


def _describe(kind: str, a: dict[str, Any]) -> CommOp:
    group_ranks = _group_ranks(a.get("group"))
    sent = None
    if kind in ("all_reduce", "reduce", "broadcast", "gather", "scatter", "all_gather"):
        payload = a["tensor"]
    elif kind == "all_gather_into_tensor":
        payload = a["input_tensor"]
    elif kind == "reduce_scatter":
        payload = a["input_list"]
    elif kind == "reduce_scatter_tensor":
        payload = a["input"]
    elif kind == "all_to_all":
        payload = a["input_tensor_list"]
        sent = _a2a_sent(a, kind, group_ranks)
    elif kind == "all_to_all_single":
        payload = a["input"]
        sent = _a2a_sent(a, kind, group_ranks)
    elif kind == "barrier":
        payload = None
    else:  # point to point
        payload = a["tensor"]
    peer = None
    if kind in ("send", "isend"):
        peer = _peer(a, "dst", group_ranks)
    elif kind in ("recv", "irecv"):
        peer = _peer(a, "src", group_ranks)
    return CommOp(
        kind=kind,
        nbytes=_nbytes(payload),
        group_ranks=group_ranks,
        rank=dist.get_rank(),
        peer=peer,
        dtype=_dtype(payload),
        sent_bytes=sent,
        async_op=bool(a.get("async_op", kind in ("isend", "irecv"))),
    )


def _emit(op: CommOp) -> None:
    with _lock:
        for log in _active:
            log.ops.append(op)


def _depth() -> int:
    return getattr(_local, "depth", 0)


def _make_wrapper(kind: str, orig: Callable[..., Any]) -> Callable[..., Any]:
    sig = inspect.signature(orig)

    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not _active or _depth() > 0:
            return orig(*args, **kwargs)
        bound = sig.bind(*args, **kwargs)
        op = _describe(kind, bound.arguments)
        _local.depth = _depth() + 1
        try:
            result = orig(*args, **kwargs)
        finally:
            _local.depth -= 1
        _emit(op)
        return result

    wrapper.__shared_comm_original__ = orig  # type: ignore[attr-defined]
    return wrapper


def _make_batch_wrapper(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def batch_isend_irecv(p2p_op_list: list[Any]) -> Any:
        # P2POps built before the wrappers existed hold the original isend/irecv; torch compares
        # ``op.op is isend`` against the module global, so point them at the wrappers.
        for p in p2p_op_list:
            if p.op is _originals["isend"]:
                p.op = _wrappers["isend"]
            elif p.op is _originals["irecv"]:
                p.op = _wrappers["irecv"]
        if not _active or _depth() > 0:
            return orig(p2p_op_list)
        ops = []
        for p in p2p_op_list:
            kind = "isend" if p.op is _wrappers["isend"] else "irecv"
            key = "dst" if kind == "isend" else "src"
            ops.append(_describe(kind, {"tensor": p.tensor, "group": p.group, key: p.peer}))
        _local.depth = _depth() + 1
        try:
            result = orig(p2p_op_list)
        finally:
            _local.depth -= 1
        for op in ops:
            _emit(op)
        return result

    return batch_isend_irecv


def install_comm_hooks() -> None:
    """Wrap the public ops of ``torch.distributed`` now (idempotent, transparent when no recorder is
    active), so libraries that capture function references later still report to recorders."""
    with _lock:
        _install()


def _install() -> None:
    """Wrap the public ops in ``torch.distributed`` and ``distributed_c10d`` (once per process)."""
    if _wrappers:
        return
    for kind in COLLECTIVES + POINT_TO_POINT:
        orig = getattr(c10d, kind)
        _originals[kind] = orig
        _wrappers[kind] = _make_wrapper(kind, orig)
    _originals["batch_isend_irecv"] = c10d.batch_isend_irecv
    _wrappers["batch_isend_irecv"] = _make_batch_wrapper(c10d.batch_isend_irecv)
    for kind, w in _wrappers.items():
        setattr(c10d, kind, w)
        setattr(dist, kind, w)


@contextmanager
def record_comm() -> Iterator[CommLog]:
    """Record every torch.distributed op this process issues inside the block into a :class:`CommLog`.

    Recorders nest: an op is appended to every active log. Needs no initialised process group to
    enter, but ops are only issued (and recorded) with one.
    """
    with _lock:
        _install()
        log = CommLog()
        _active.append(log)
    try:
        yield log
    finally:
        with _lock:
            _active.remove(log)
