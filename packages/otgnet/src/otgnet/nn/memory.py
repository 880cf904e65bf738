"""Node memory of OTGNet (official ``modules/memory.py``): a table of node states.

Not a GRU: OTGNet updates ``m_v <- tanh(W_uc [m_v ; tanh([msg_src ; msg_dst]) ; tanh(W_e e)])``
(in :class:`otgnet.nn.model.OTGNet`). The table is re-initialised (Xavier-normal, from a fixed
seed, the same every time) at the start of every epoch and of every evaluation pass, and it is
detached after every batch.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NodeMemory"]


class NodeMemory(nn.Module):
    def __init__(self, num_nodes: int, dim: int, init_seed: int = 0) -> None:
        super().__init__()
        if num_nodes < 1 or dim < 1:
            raise ValueError(f"num_nodes and dim must be >= 1, got {num_nodes}, {dim}")
        self.num_nodes, self.dim, self.init_seed = num_nodes, dim, init_seed
        self.register_buffer("emb", torch.empty(num_nodes, dim), persistent=False)
        self.reset()

    def reset(self) -> None:
        g = torch.Generator().manual_seed(self.init_seed)
        std = (2.0 / (self.num_nodes + self.dim)) ** 0.5  # xavier_normal_ on a (N, d) matrix
        init = torch.randn(self.num_nodes, self.dim, generator=g) * std
        self.emb = init.to(self.emb.device)

    def write(self, nodes: torch.Tensor, values: torch.Tensor) -> None:
        """Store detached ``values`` for ``nodes``; on repeats the *last* occurrence wins."""
        nodes = nodes.to(self.emb.device)
        last = _last_occurrence(nodes)
        self.emb[nodes[last]] = values[last].detach().to(self.emb)

    def snapshot(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.emb[nodes.to(self.emb.device)].clone()

    def restore(self, nodes: torch.Tensor, values: torch.Tensor) -> None:
        self.emb[nodes.to(self.emb.device)] = values.to(self.emb)


def _last_occurrence(ids: torch.Tensor) -> torch.Tensor:
    """Indices of the last occurrence of each distinct value of ``ids``."""
    n = len(ids)
    rev = torch.flip(ids, [0])
    uniq, inv = torch.unique(rev, return_inverse=True)
    first_in_rev = torch.full((len(uniq),), n, dtype=torch.long, device=ids.device)
    first_in_rev.scatter_reduce_(0, inv, torch.arange(n, device=ids.device), reduce="amin")
    return n - 1 - first_in_rev
