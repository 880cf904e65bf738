"""Temporal neighbour finder: the ``k`` most recent neighbours strictly before a query time.

Official ``NeighborFinder.find_before`` does a per-node ``searchsorted`` in Python. Here the whole
batch is one ``searchsorted`` over a composite integer key ``node * (U + 1) + time_rank`` (``U``
distinct timestamps), so there is no per-query Python loop and no float-precision issue with large
timestamps. PyG's ``LastNeighborLoader`` keeps the last neighbours *as of the stream position*; it
cannot answer "before an arbitrary t" (replayed edges, evaluation masks, all-time k-NN pseudo
labels), hence this class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NeighborBatch", "TemporalNeighborFinder"]


@dataclass(frozen=True)
class NeighborBatch:
    """``(B, k)`` tensors, most recent first; ``mask`` is False on padding (node 0, time 0)."""

    nodes: torch.Tensor  # long
    times: torch.Tensor  # float64
    eids: torch.Tensor  # long (-1 on padding)
    mask: torch.Tensor  # bool


class TemporalNeighborFinder:
    """Adjacency over the events ``(src[e], dst[e], t[e])`` with ids ``eid[e]`` (both directions).

    ``exclude`` (bool, ``(N,)``): nodes never returned as neighbours (the evaluation mask of the
    protocol: val/test nodes). They can still be *queried*.
    """

    def __init__(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        t: np.ndarray,
        num_nodes: int,
        eid: np.ndarray | None = None,
        exclude: np.ndarray | None = None,
    ) -> None:
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        t = np.asarray(t, dtype=np.float64)
        eid = np.arange(len(src), dtype=np.int64) if eid is None else np.asarray(eid, np.int64)
        if not (src.shape == dst.shape == t.shape == eid.shape):
            raise ValueError("src, dst, t and eid must have the same shape")
        self.num_nodes = int(num_nodes)
        node = np.concatenate([src, dst])
        nbr = np.concatenate([dst, src])
        tt = np.concatenate([t, t])
        ee = np.concatenate([eid, eid])
        if exclude is not None:
            exclude = np.asarray(exclude, dtype=bool)
            if exclude.shape != (self.num_nodes,):
                raise ValueError(f"exclude must have shape ({self.num_nodes},)")
            keep = ~exclude[nbr]
            node, nbr, tt, ee = node[keep], nbr[keep], tt[keep], ee[keep]
        self.times_unique = np.unique(tt)
        rank = np.searchsorted(self.times_unique, tt)
        self._stride = len(self.times_unique) + 1
        order = np.lexsort((ee, rank, node))  # by node, then time, then event id
        self._key = node[order] * self._stride + rank[order]
        self._nbr = nbr[order]
        self._t = tt[order]
        self._eid = ee[order]
        self._indptr = np.searchsorted(node[order], np.arange(self.num_nodes + 1))

    def __len__(self) -> int:
        return len(self._nbr)

    def degree_before(self, nodes: np.ndarray, times: np.ndarray) -> np.ndarray:
        nodes, times = np.asarray(nodes, np.int64), np.asarray(times, np.float64)
        pos = self._positions(nodes, times)
        return pos - self._indptr[nodes]

    def _positions(self, nodes: np.ndarray, times: np.ndarray) -> np.ndarray:
        if nodes.size and (nodes.min() < 0 or nodes.max() >= self.num_nodes):
            raise ValueError(f"query node ids must lie in [0, {self.num_nodes})")
        r = np.searchsorted(self.times_unique, times, side="left")  # distinct times < t
        return np.searchsorted(self._key, nodes * self._stride + r, side="left")

    def before(self, nodes, times, k: int) -> NeighborBatch:
        """The ``k`` most recent neighbours of ``nodes[i]`` strictly before ``times[i]``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        nodes = np.asarray(nodes.cpu() if isinstance(nodes, torch.Tensor) else nodes, np.int64)
        times = np.asarray(times.cpu() if isinstance(times, torch.Tensor) else times, np.float64)
        if nodes.shape != times.shape or nodes.ndim != 1:
            raise ValueError("nodes and times must be 1-D of equal length")
        hi = self._positions(nodes, times)
        lo = self._indptr[nodes]
        idx = hi[:, None] - 1 - np.arange(k)[None, :]
        mask = idx >= lo[:, None]
        idx = np.where(mask, idx, 0)
        if len(self._nbr) == 0:
            z = torch.zeros((len(nodes), k), dtype=torch.long)
            return NeighborBatch(
                z, z.double(), z - 1, torch.zeros((len(nodes), k), dtype=torch.bool)
            )
        nb = np.where(mask, self._nbr[idx], 0)
        tt = np.where(mask, self._t[idx], 0.0)
        ee = np.where(mask, self._eid[idx], -1)
        return NeighborBatch(
            torch.from_numpy(nb), torch.from_numpy(tt), torch.from_numpy(ee), torch.from_numpy(mask)
        )

    def all_time(self, nodes, k: int) -> NeighborBatch:
        """The ``k`` most recent neighbours over the whole stream."""
        nodes = np.asarray(nodes.cpu() if isinstance(nodes, torch.Tensor) else nodes, np.int64)
        return self.before(nodes, np.full(len(nodes), np.inf), k)
