"""HO-Ring (PaRO-CC): the hierarchical overlapping ring all-reduce, written with point-to-point ops.

Paper §4 (v1/v2 "HO-Ring", NeurIPS "PaRO-CC"); official design: ``InterIntraCommInfo`` in the
authors' DeepSpeed branch (dossier §3.7). For ``n`` ranks in ``g`` groups of ``m``:

1. intra-group ring reduce-scatter: the tensor is cut into ``m`` chunks; after ``m-1`` steps local
   rank ``l`` holds its group's sum of chunk ``l``;
2. ``m`` concurrent inter-group ring all-reduces, one per local rank ``l``, each over chunk ``l``
   (``2(g-1)`` steps) — the "overlapping" rings, one per NIC on a rail-optimised cluster;
3. intra-group ring all-gather (``m-1`` steps).

Steps: ``2(m-1) + 2(g-1)`` versus ``2(n-1)`` for the flat ring (:func:`ring_all_reduce_`). Each
step is one ``batch_isend_irecv`` of a send to the next rank and a receive from the previous one.
Tensors of any size work: chunks follow ``torch.tensor_split`` (sizes differ by at most one element,
empty chunks are skipped on both sides).

:func:`hierarchical_all_reduce_` is the same decomposition with the group collectives of
torch.distributed (reduce-scatter / all-reduce / all-gather), the form the engine uses by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from paro.topology import ParoGroups, Topology

__all__ = [
    "chunk_bounds",
    "hierarchical_all_reduce_",
    "ho_ring_all_reduce_",
    "ring_all_gather_",
    "ring_all_reduce_",
    "ring_reduce_scatter_",
]


def chunk_bounds(numel: int, parts: int, offset: int = 0) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering ``[offset, offset+numel)``, sizes within 1."""
    base, extra = divmod(numel, parts)
    out, start = [], offset
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def _exchange(send: torch.Tensor | None, dst: int, recv: torch.Tensor | None, src: int) -> None:
    ops = []
    if send is not None and send.numel():
        ops.append(dist.P2POp(dist.isend, send, dst))
    if recv is not None and recv.numel():
        ops.append(dist.P2POp(dist.irecv, recv, src))
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()


def _check(flat: torch.Tensor, ranks: tuple[int, ...]) -> int:
    me = dist.get_rank()
    if me not in ranks:
        raise ValueError(f"rank {me} is not in the ring {ranks}")
    if not flat.is_contiguous():
        raise ValueError("ring collectives need a contiguous tensor")
    return ranks.index(me)


def ring_reduce_scatter_(
    flat: torch.Tensor, ranks: tuple[int, ...], bounds: list[tuple[int, int]]
) -> None:
    """In-place ring reduce-scatter (sum) of the 1-D ``flat`` over global ``ranks``.

    ``bounds[i]`` is the range ring member ``i`` ends up owning, fully reduced; other ranges hold
    partial sums afterwards. ``k-1`` steps.
    """
    k = len(ranks)
    i = _check(flat, ranks)
    if k == 1:
        return
    nxt, prv = ranks[(i + 1) % k], ranks[(i - 1) % k]
    for s in range(k - 1):
        a0, a1 = bounds[(i - s - 1) % k]
        b0, b1 = bounds[(i - s - 2) % k]
        tmp = torch.empty(b1 - b0, dtype=flat.dtype, device=flat.device)
        _exchange(flat[a0:a1], nxt, tmp, prv)
        flat[b0:b1].add_(tmp)


def ring_all_gather_(
    flat: torch.Tensor, ranks: tuple[int, ...], bounds: list[tuple[int, int]]
) -> None:
    """In-place ring all-gather: member ``i`` contributes ``flat[bounds[i]]``. ``k-1`` steps."""
    k = len(ranks)
    i = _check(flat, ranks)
    if k == 1:
        return
    nxt, prv = ranks[(i + 1) % k], ranks[(i - 1) % k]
    for s in range(k - 1):
        a0, a1 = bounds[(i - s) % k]
        b0, b1 = bounds[(i - s - 1) % k]
        _exchange(flat[a0:a1], nxt, flat[b0:b1], prv)


def ring_all_reduce_(tensor: torch.Tensor, ranks: tuple[int, ...] | None = None) -> torch.Tensor:
    """Flat ring all-reduce (sum) over ``ranks`` (default: all, in rank order), in place.

    The textbook baseline: reduce-scatter then all-gather around one ring, ``2(k-1)`` steps.
    """
    ranks = tuple(range(dist.get_world_size())) if ranks is None else tuple(ranks)
    flat = tensor.view(-1)
    bounds = chunk_bounds(flat.numel(), len(ranks))
    ring_reduce_scatter_(flat, ranks, bounds)
    ring_all_gather_(flat, ranks, bounds)
    return tensor


def _issue(send: torch.Tensor, dst: int, recv: torch.Tensor, src: int) -> list[Any]:
    works = []
    if send.numel():
        works.append(dist.isend(send, dst))
    if recv.numel():
        works.append(dist.irecv(recv, src))
    return works


def _rs_steps(
    flat: torch.Tensor, ranks: tuple[int, ...], bounds: list[tuple[int, int]]
) -> Iterator:
    """Ring reduce-scatter as a generator: yields the works of each step before finishing it."""
    k = len(ranks)
    i = ranks.index(dist.get_rank())
    nxt, prv = ranks[(i + 1) % k], ranks[(i - 1) % k]
    for s in range(k - 1):
        a0, a1 = bounds[(i - s - 1) % k]
        b0, b1 = bounds[(i - s - 2) % k]
        tmp = torch.empty(b1 - b0, dtype=flat.dtype, device=flat.device)
        yield _issue(flat[a0:a1], nxt, tmp, prv)
        flat[b0:b1].add_(tmp)


def _ag_steps(
    flat: torch.Tensor, ranks: tuple[int, ...], bounds: list[tuple[int, int]]
) -> Iterator:
    """Ring all-gather as a generator (see :func:`_rs_steps`)."""
    k = len(ranks)
    i = ranks.index(dist.get_rank())
    nxt, prv = ranks[(i + 1) % k], ranks[(i - 1) % k]
    for s in range(k - 1):
        a0, a1 = bounds[(i - s) % k]
        b0, b1 = bounds[(i - s - 1) % k]
        yield _issue(flat[a0:a1], nxt, flat[b0:b1], prv)


def _ho_ring_piece(flat: torch.Tensor, topo: Topology, rank: int) -> Iterator:
    intra, inter = topo.intra_ranks(rank), topo.inter_ranks(rank)
    chunks = chunk_bounds(flat.numel(), topo.m)
    c0, c1 = chunks[topo.local_rank(rank)]
    piece = flat[c0:c1]
    sub = chunk_bounds(piece.numel(), topo.g)
    yield from _rs_steps(flat, intra, chunks)  # 1. intra-group reduce-scatter
    yield from _rs_steps(piece, inter, sub)  # 2. inter-group ring all-reduce of chunk l
    yield from _ag_steps(piece, inter, sub)
    yield from _ag_steps(flat, intra, chunks)  # 3. intra-group all-gather


def ho_ring_all_reduce_(
    tensor: torch.Tensor, topology: Topology | int, pipeline_chunks: int = 1
) -> torch.Tensor:
    """HO-Ring all-reduce (sum) of a contiguous ``tensor`` over all ranks, in place.

    ``topology``: a :class:`Topology` or the group size ``m``. Every rank must call it.

    ``pipeline_chunks = K > 1`` cuts the tensor into ``K`` pieces and staggers them by the
    ``m-1`` steps of the intra reduce-scatter, so piece ``i``'s inter-group rings run while piece
    ``i+1`` is reduced inside the group: the intra and inter links are busy at the same time
    (our reading of "overlapping"; the official code runs the phases one after the other, the
    default ``K = 1``). The bytes sent are the same for any ``K`` (per rank up to the rounding of
    uneven chunk sizes).
    """
    if isinstance(topology, int):
        topology = Topology(dist.get_world_size(), topology)
    if topology.n != dist.get_world_size():
        raise ValueError(
            f"topology has {topology.n} ranks but the process group has {dist.get_world_size()}"
        )
    if not isinstance(pipeline_chunks, int) or pipeline_chunks < 1:
        raise ValueError(f"pipeline_chunks must be a positive int, got {pipeline_chunks!r}")
    if not tensor.is_contiguous():
        raise ValueError("ho_ring_all_reduce_ needs a contiguous tensor")
    rank = dist.get_rank()
    flat = tensor.view(-1)
    pieces = [
        _ho_ring_piece(flat[a:b], topology, rank)
        for a, b in chunk_bounds(flat.numel(), pipeline_chunks)
    ]
    stagger = max(topology.m - 1, 1)
    active: list[Iterator] = []
    tick = 0
    # lock-step schedule, identical on every rank: each tick every active piece issues one step
    # (in piece order, so messages between a pair of ranks match in order), then all are awaited
    while pieces or active:
        if pieces and tick % stagger == 0:
            active.append(pieces.pop(0))
        works, still = [], []
        for gen in active:
            try:
                works += next(gen)
                still.append(gen)
            except StopIteration:
                continue
        for w in works:
            w.wait()
        active = still
        tick += 1
    # finish the local work after the last yield of each generator
    return tensor


def hierarchical_all_reduce_(tensor: torch.Tensor, groups: ParoGroups) -> torch.Tensor:
    """The HO-Ring decomposition with group collectives: intra RS, inter AR, intra AG (in place).

    Needs ``tensor.numel()`` divisible by the group size ``m`` (the engine pads its buffers).
    """
    m = groups.topology.m
    flat = tensor.view(-1)
    if flat.numel() % m:
        raise ValueError(
            f"hierarchical_all_reduce_ needs numel divisible by m={m}, got {flat.numel()}"
        )
    if m == 1:
        if groups.topology.g > 1:
            dist.all_reduce(flat, group=groups.inter)
        return tensor
    parts = list(flat.chunk(m))
    mine = torch.empty_like(parts[0])
    dist.reduce_scatter(mine, parts, group=groups.intra)
    if groups.topology.g > 1:
        dist.all_reduce(mine, group=groups.inter)
    dist.all_gather(parts, mine, group=groups.intra)
    return tensor
