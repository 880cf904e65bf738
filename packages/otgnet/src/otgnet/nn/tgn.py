"""The TGN baseline (Rossi et al. 2020) on PyG's temporal building blocks.

``TGNMemory`` (GRU memory with message stores, ``IdentityMessage``, ``LastAggregator``) and a
``TransformerConv`` graph-attention embedding over the most recent neighbours, as in PyG's
``examples/tgn.py``, with the same node classifier as OTGNet on ``[z ; x]``. Neighbours come from
:class:`~otgnet.nn.neighbors.TemporalNeighborFinder` rather than ``LastNeighborLoader``: the
protocol needs neighbours before arbitrary times (replayed events) and evaluation masks, which the
loader's stream-position view cannot give. PyG's memory stores integer times, so timestamps are
rounded to integers here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.nn import TransformerConv
from torch_geometric.nn.models.tgn import IdentityMessage, LastAggregator, TGNMemory

from otgnet.nn.classifier import EdgeOutput, NodeClassifier
from otgnet.nn.neighbors import TemporalNeighborFinder

__all__ = ["TGNClassifier", "TGNConfig"]


@dataclass(frozen=True)
class TGNConfig:
    memory_dim: int = 64
    time_dim: int = 16
    heads: int = 2
    n_neighbors: int = 5
    hidden: int = 128
    dropout: float = 0.5
    attn_dropout: float = 0.1
    use_features: bool = True

    def __post_init__(self) -> None:
        for name in ("memory_dim", "time_dim", "heads", "n_neighbors", "hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.memory_dim % self.heads:
            raise ValueError(
                f"memory_dim ({self.memory_dim}) must be divisible by heads ({self.heads})"
            )
        if not (0 <= self.dropout < 1 and 0 <= self.attn_dropout < 1):
            raise ValueError("dropouts must lie in [0, 1)")


class TGNClassifier(NodeClassifier):
    """TGN node classifier with the same call signature as :class:`~otgnet.nn.model.OTGNet`."""

    def __init__(
        self,
        x: torch.Tensor,
        num_classes: int,
        config: TGNConfig | None = None,
        edge_attr: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        cfg = config or TGNConfig()
        super().__init__(
            x, num_classes, edge_attr, cfg.memory_dim, cfg.hidden, cfg.dropout, cfg.use_features
        )
        self.config = cfg
        n = self.x.shape[0]
        msg_dim = self.edge_dim
        self.memory = TGNMemory(
            n,
            msg_dim,
            cfg.memory_dim,
            cfg.time_dim,
            message_module=IdentityMessage(msg_dim, cfg.memory_dim, cfg.time_dim),
            aggregator_module=LastAggregator(),
        )
        self.conv = TransformerConv(
            cfg.memory_dim,
            cfg.memory_dim // cfg.heads,
            heads=cfg.heads,
            dropout=cfg.attn_dropout,
            edge_dim=msg_dim + cfg.time_dim,
        )

    def main_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def reset_state(self) -> None:
        self.memory.reset_state()

    def detach(self) -> None:
        self.memory.detach()

    def forward(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        t: torch.Tensor,
        eid: torch.Tensor,
        finder: TemporalNeighborFinder,
        gate_labels: torch.Tensor | None = None,  # unused: TGN has no label gating
        write_memory: bool = True,
    ) -> EdgeOutput:
        cfg = self.config
        dev = self.x.device
        b = len(src)
        centres = torch.cat([src, dst]).to(dev)
        tc = torch.cat([t, t]).double()
        nb = finder.before(centres.cpu(), tc.cpu(), cfg.n_neighbors)
        mask = nb.mask.to(dev)
        rows = torch.arange(2 * b, device=dev).unsqueeze(1).expand_as(mask)[mask]
        nbr = nb.nodes.to(dev)[mask]
        n_id, inv = torch.unique(torch.cat([centres, nbr]), return_inverse=True)
        mem, _ = self.memory(n_id)
        x_dst, x_src = mem[inv[: 2 * b]], mem[inv[2 * b :]]
        rel_t = (tc.to(dev)[rows] - nb.times.to(dev)[mask]).float()
        e_attr = torch.cat(
            [self.memory.time_enc(rel_t.unsqueeze(-1)), self.edge_rows(nb.eids.to(dev)[mask])], -1
        )
        edge_index = torch.stack([torch.arange(len(nbr), device=dev), rows])
        z = self.conv((x_src, x_dst), edge_index, e_attr)
        if write_memory:
            t_long = torch.round(t.double()).long().to(dev)
            self.memory.update_state(src.to(dev), dst.to(dev), t_long, self.edge_rows(eid.to(dev)))
        hid, logits = self.classify(z, centres)
        return EdgeOutput(logits[:b], logits[b:], z[:b], z[b:], hid[:b], hid[b:])

    def ib_step(self, epoch_in_task: int) -> dict[str, float]:
        return {}
