"""Closed and open triads of one class, mined without a Python loop per edge (paper Sec. 4.2;
official ``modules/buffer.py``).

Over the events whose endpoints both belong to the class, each unordered node pair keeps its first
event. Every *wedge* ``a - u - b`` (two pairs sharing ``u``) is enumerated per centre ``u`` with
``repeat_interleave`` arithmetic, and the pair ``(a, b)`` is looked up by ``searchsorted`` on sorted
pair keys:

- **closed triad**: ``(a, b)`` exists and was first linked *after* both wedge edges (the triangle
  closed last); every triangle is found exactly once this way (from the vertex opposite its latest
  edge; ties in time drop it);
- **open triad**: ``(a, b)`` was never linked.

Replaying a triad replays its two wedge edges; ``(a, b)`` is a positive pair (closed) or a negative
pair (open) for the pattern loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Triads", "mine_triads"]


@dataclass(frozen=True, eq=False)
class Triads:
    """``M`` triads: ``nodes[:, (a, u, b)]``, wedge event ids ``edges[:, (a-u, u-b)]``, ``closed``."""

    nodes: np.ndarray  # (M, 3)
    edges: np.ndarray  # (M, 2)
    closed: np.ndarray  # (M,) bool
    times: np.ndarray  # (M,) time at which the triad formed (closing event, or later wedge edge)

    def __len__(self) -> int:
        return len(self.closed)

    def take(self, idx: np.ndarray) -> Triads:
        idx = np.asarray(idx, dtype=np.int64)
        return Triads(self.nodes[idx], self.edges[idx], self.closed[idx], self.times[idx])

    @staticmethod
    def empty() -> Triads:
        return Triads(
            np.zeros((0, 3), np.int64), np.zeros((0, 2), np.int64), np.zeros(0, bool), np.zeros(0)
        )


def mine_triads(
    src: np.ndarray,
    dst: np.ndarray,
    t: np.ndarray,
    eid: np.ndarray,
    max_candidates: int | None = None,
    seed: int = 0,
) -> Triads:
    """All closed and open triads of the event set ``(src, dst, t, eid)`` (self-loops ignored).

    ``max_candidates`` caps the output by a seeded uniform sample (wedges grow as degree squared).
    """
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    t, eid = np.asarray(t, np.float64), np.asarray(eid, np.int64)
    keep = src != dst
    src, dst, t, eid = src[keep], dst[keep], t[keep], eid[keep]
    if src.size < 2:
        return Triads.empty()
    # compact node ids so pair keys stay small
    ids, inv = np.unique(np.concatenate([src, dst]), return_inverse=True)
    n = len(ids)
    a, b = inv[: len(src)], inv[len(src) :]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * n + hi
    order = np.lexsort((eid, t, key))
    key, lo, hi, t, eid = key[order], lo[order], hi[order], t[order], eid[order]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    pkey, plo, phi, pt, pe = key[first], lo[first], hi[first], t[first], eid[first]
    # both directions, grouped by centre
    cen = np.concatenate([plo, phi])
    nbr = np.concatenate([phi, plo])
    ct = np.concatenate([pt, pt])
    ce = np.concatenate([pe, pe])
    o = np.argsort(cen, kind="stable")
    cen, nbr, ct, ce = cen[o], nbr[o], ct[o], ce[o]
    indptr = np.searchsorted(cen, np.arange(n + 1))
    deg = np.diff(indptr)
    pos = np.arange(len(cen))
    off = pos - indptr[cen]
    cnt = deg[cen] - 1 - off  # partners to the right within the same centre
    total = int(cnt.sum())
    if total == 0:
        return Triads.empty()
    left = np.repeat(pos, cnt)
    start = np.repeat(np.cumsum(cnt) - cnt, cnt)
    right = np.arange(total) - start + np.repeat(pos + 1, cnt)
    wa, wb, wu = nbr[left], nbr[right], cen[left]
    t1, t2 = ct[left], ct[right]
    k = np.minimum(wa, wb) * n + np.maximum(wa, wb)
    j = np.searchsorted(pkey, k)
    j = np.minimum(j, len(pkey) - 1)
    exists = pkey[j] == k
    tab = np.where(exists, pt[j], np.inf)
    closed = exists & (tab > np.maximum(t1, t2))
    is_open = ~exists
    sel = np.flatnonzero(closed | is_open)
    if max_candidates is not None and len(sel) > max_candidates:
        rng = np.random.default_rng(seed)
        sel = np.sort(rng.choice(sel, max_candidates, replace=False))
    nodes = np.stack([ids[wa[sel]], ids[wu[sel]], ids[wb[sel]]], 1)
    edges = np.stack([ce[left[sel]], ce[right[sel]]], 1)
    times = np.where(closed[sel], tab[sel], np.maximum(t1[sel], t2[sel]))
    return Triads(nodes, edges, closed[sel], times)
