"""The replay buffer: events replayed in every later batch, pattern pairs, memory snapshot.

Triad replay (OTGNet) stores, per past task, the two wedge events of each selected triad, the
``(a, b)`` end pairs (positive for closed triads, negative for open ones) for the pattern loss, and a
snapshot of the triad nodes' memory (restored before every batch, as in the official code). Random
replay baselines store uniformly drawn events (or triads) at the same budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ReplayBuffer", "pattern_loss"]


@dataclass
class ReplayBuffer:
    edges: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pos_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    neg_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    snapshot: torch.Tensor | None = None
    n_triads: int = 0

    def __len__(self) -> int:
        return len(self.edges)

    def add(
        self,
        edges: np.ndarray,
        pos_pairs: np.ndarray | None = None,
        neg_pairs: np.ndarray | None = None,
        nodes: np.ndarray | None = None,
        snapshot: torch.Tensor | None = None,
        n_triads: int = 0,
    ) -> None:
        self.edges = np.unique(np.concatenate([self.edges, np.asarray(edges, np.int64).ravel()]))
        if pos_pairs is not None:
            self.pos_pairs = np.concatenate([self.pos_pairs, np.asarray(pos_pairs).reshape(-1, 2)])
        if neg_pairs is not None:
            self.neg_pairs = np.concatenate([self.neg_pairs, np.asarray(neg_pairs).reshape(-1, 2)])
        self.n_triads += n_triads
        if nodes is not None and snapshot is not None and len(nodes):
            nodes = np.asarray(nodes, np.int64)
            if self.snapshot is None:
                self.nodes, self.snapshot = nodes, snapshot.detach().clone()
            else:
                # a node snapshotted again keeps its newest memory
                keep = ~np.isin(self.nodes, nodes)
                self.nodes = np.concatenate([self.nodes[keep], nodes])
                self.snapshot = torch.cat(
                    [self.snapshot[torch.from_numpy(keep)], snapshot.detach()]
                )


def pattern_loss(mem: torch.Tensor, pos: np.ndarray, neg: np.ndarray) -> torch.Tensor:
    """Triad pattern loss: ``BCE(sigmoid(<m_a, m_b>), 1)`` over closed-triad end pairs plus
    ``BCE(.., 0)`` over open-triad end pairs (each term a mean; the official code divides the sum of
    both by the number of positive pairs)."""
    loss = mem.new_zeros(())
    for pairs, target in ((pos, 1.0), (neg, 0.0)):
        if len(pairs):
            p = torch.from_numpy(np.asarray(pairs, np.int64)).to(mem.device)
            s = (mem[p[:, 0]] * mem[p[:, 1]]).sum(-1)
            loss = loss + F.binary_cross_entropy_with_logits(s, torch.full_like(s, target))
    return loss
