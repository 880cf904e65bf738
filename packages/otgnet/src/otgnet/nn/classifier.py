"""What OTGNet and the TGN baseline share: the node table, the edge-feature table and the node
classifier ``head(dropout(ReLU(W_c1 [r_v ; x_v])))`` on a node representation ``r_v`` (OTGNet's
memory, TGN's embedding) and its features ``x_v`` (official ``use_feature='fg'``), plus the
per-endpoint output record both models return."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EdgeOutput", "NodeClassifier"]


@dataclass
class EdgeOutput:
    """Per-endpoint outputs of one batch (``*_src`` and ``*_dst`` rows align with the events)."""

    logits_src: torch.Tensor  # (B, num_classes_total)
    logits_dst: torch.Tensor
    mem_src: torch.Tensor  # updated memory (OTGNet) / embedding (TGN), with gradient
    mem_dst: torch.Tensor
    hidden_src: torch.Tensor  # classifier hidden layer (input of the head)
    hidden_dst: torch.Tensor


class NodeClassifier(nn.Module):
    """Base of the temporal models: registers ``x`` (``(N, F)``) and ``edge_attr`` (``(E, Fe)``
    indexed by event id, or ``None`` for featureless events: an all-zero width-1 table, as
    official), and builds the classifier for ``rep_dim``-wide node representations."""

    def __init__(
        self,
        x: torch.Tensor,
        num_classes: int,
        edge_attr: torch.Tensor | None,
        rep_dim: int,
        hidden: int,
        dropout: float,
        use_features: bool,
    ) -> None:
        super().__init__()
        x = torch.as_tensor(x)
        if x.ndim != 2:
            raise ValueError(f"x must be (num_nodes, F), got {tuple(x.shape)}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.register_buffer("x", x.float().clone(), persistent=False)
        if edge_attr is None:
            edge_attr = torch.zeros(1, 1)
        edge_attr = torch.as_tensor(edge_attr, dtype=torch.float32)
        if edge_attr.ndim != 2:
            raise ValueError(f"edge_attr must be (E, Fe), got {tuple(edge_attr.shape)}")
        self.register_buffer("edge_table", edge_attr.clone(), persistent=False)
        self.has_edge_attr = edge_attr.shape[0] > 1 or bool(edge_attr.abs().sum() > 0)
        self.num_classes = num_classes
        self.use_features = bool(use_features and x.shape[1])
        fx = x.shape[1] if self.use_features else 0
        self.W_c1 = nn.Linear(rep_dim + fx, hidden)
        self.head = nn.Linear(hidden, num_classes)
        self.drop = nn.Dropout(dropout)

    @property
    def edge_dim(self) -> int:
        return self.edge_table.shape[1]

    def edge_rows(self, eid: torch.Tensor) -> torch.Tensor:
        """Edge features of events ``eid`` (zeros when the graph has none)."""
        if not self.has_edge_attr:
            return self.edge_table.new_zeros(len(eid), self.edge_dim)
        return self.edge_table[eid.to(self.edge_table.device)]

    def node_input(self, rep: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """``[rep ; x[nodes]]`` (just ``rep`` without features)."""
        return torch.cat([rep, self.x[nodes]], -1) if self.use_features else rep

    def classify(self, rep: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hidden, logits over all classes)`` for representations ``rep`` of ``nodes``."""
        h = self.drop(F.relu(self.W_c1(self.node_input(rep, nodes))))
        return h, self.head(h)
