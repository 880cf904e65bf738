"""The OTGNet model (paper Sec. 4; official ``models/OTGNet.py``, class ``CIGNN``).

For a batch of events ``(s, d, t)``, for each endpoint ``c``:

1. the ``n_neighbors`` most recent neighbours ``n`` strictly before ``t`` give
   ``h_n = W_f [m_n ; x_n]``; a neighbour whose class differs from ``c``'s (known label, or
   pseudo-label for a node without one) contributes only ``IB(h_n)``, its class-agnostic part
   (Sec. 4.1);
2. attention ``a_n = softmax_n LeakyReLU(a^T [W_q h_c ; W_k [h_n ; phi(t - t_n)]])`` gives the
   message ``msg_c = sum_n a_n W_k [h_n ; phi]`` (dropout on the attention input);
3. when ``s`` and ``d`` have different classes, both messages are replaced by ``IB(msg)``;
4. memory update ``m_c <- tanh(W_uc [m_c ; tanh([msg_s ; msg_d]) ; tanh(W_e e)])``;
5. classifier ``head(dropout(ReLU(W_c1 [m_c ; x_c])))``.

``gate_labels`` (the labels steps 1 and 3 compare) are passed in by the caller and must hold only
labels the learner may see (train nodes; pseudo-labels elsewhere); the official code reads every
node's true label there, test nodes included (dossier B10.9).

Heads: ``"class_il"`` (one head over all classes seen so far: the class-incremental setting the
paper describes) or ``"task_il_oracle"`` (the official default ``head='multi'``: a 3-way head per
task, chosen by the *true* label's task, in training and evaluation: task identity is an oracle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from otgnet.nn.classifier import EdgeOutput, NodeClassifier
from otgnet.nn.ib import InformationBottleneck
from otgnet.nn.memory import NodeMemory
from otgnet.nn.neighbors import TemporalNeighborFinder
from otgnet.nn.time_encoding import TimeEncoding

__all__ = ["HEADS", "OTGNet", "OTGNetConfig"]

HEADS = ("class_il", "task_il_oracle")


@dataclass(frozen=True)
class OTGNetConfig:
    """Model hyper-parameters (official defaults in the comments)."""

    emb_dim: int = 64  # 100
    n_neighbors: int = 5  # 5
    time_dim: int = 5  # 5, fixed frequencies
    time_learnable: bool = False
    hidden: int = 128  # 128
    dropout: float = 0.5  # 0.5 (attention input and classifier)
    use_features: bool = True  # 'fg': memory and features
    use_ib: bool = True
    ib_on_messages: bool = True  # off for Taobao in the official code
    ib_beta: float = 0.3
    ib_lr: float = 5e-3
    ib_hidden: int = 64
    ib_cache: int = 1000
    ib_estimator_epochs: int = 10
    head: str = "class_il"
    knn: int = 50  # neighbours for the k-NN pseudo-labels of unlabelled nodes

    def __post_init__(self) -> None:
        for name in ("emb_dim", "n_neighbors", "time_dim", "hidden", "ib_hidden", "knn"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.ib_beta < 0 or self.ib_lr <= 0:
            raise ValueError("ib_beta must be >= 0 and ib_lr > 0")
        if self.ib_cache < 2 or self.ib_estimator_epochs < 0:
            raise ValueError("ib_cache must be >= 2 and ib_estimator_epochs >= 0")


class OTGNet(NodeClassifier):
    """OTGNet over a fixed node table ``x`` (``(N, F)``) with ``num_classes`` classes in total.

    ``edge_attr`` (``(E, Fe)``, indexed by event id) or ``None`` for featureless events.
    """

    def __init__(
        self,
        x: torch.Tensor,
        num_classes: int,
        config: OTGNetConfig | None = None,
        edge_attr: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        cfg = config or OTGNetConfig()
        d = cfg.emb_dim
        super().__init__(x, num_classes, edge_attr, d, cfg.hidden, cfg.dropout, cfg.use_features)
        self.config = cfg
        n, f = self.x.shape
        fx = f if self.use_features else 0
        self.memory = NodeMemory(n, d, init_seed=seed)
        self.W_f = nn.Linear(d + fx, d)
        self.time_enc = TimeEncoding(cfg.time_dim, cfg.time_learnable)
        self.W_q = nn.Linear(d, d, bias=False)
        self.W_k = nn.Linear(d + cfg.time_dim, d, bias=False)
        self.att = nn.Linear(2 * d, 1, bias=False)
        self.W_e = nn.Linear(self.edge_dim, d)
        self.W_uc = nn.Linear(d + 2 * d + d, d)
        self.ib = InformationBottleneck(
            d, num_classes, cfg.ib_beta, cfg.ib_hidden, cfg.ib_lr, cfg.ib_cache, seed=seed
        )

    # ------------------------------------------------------------------ state
    def main_parameters(self) -> list[nn.Parameter]:
        """Parameters of the main optimiser (the IB has its own, as in the official code)."""
        ib = {id(p) for p in self.ib.parameters()}
        return [p for p in self.parameters() if id(p) not in ib]

    def reset_state(self) -> None:
        self.memory.reset()

    def detach(self) -> None:
        """Nothing to do: the memory table only ever stores detached values."""

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        t: torch.Tensor,
        eid: torch.Tensor,
        finder: TemporalNeighborFinder,
        gate_labels: torch.Tensor,
        write_memory: bool = True,
    ) -> EdgeOutput:
        cfg = self.config
        dev = self.memory.emb.device
        b = len(src)
        centres = torch.cat([src, dst]).to(dev)
        tc = torch.cat([t, t]).double()
        nb = finder.before(centres.cpu(), tc.cpu(), cfg.n_neighbors)
        nodes, mask = nb.nodes.to(dev), nb.mask.to(dev)
        mem = self.memory.emb
        h_n = self.W_f(self.node_input(mem[nodes], nodes))  # (2B, k, d)
        gl = gate_labels.to(dev)
        c_lab = gl[centres]
        if cfg.use_ib:
            n_lab = gl[nodes]
            cross = mask & (n_lab >= 0) & ((c_lab[:, None] < 0) | (n_lab != c_lab[:, None]))
            if cross.any():
                flat = h_n[cross]
                if self.training:
                    self.ib.remember(flat, n_lab[cross])
                h_n = h_n.masked_scatter(cross.unsqueeze(-1), self.ib.encode(flat))
        dt = (tc.to(dev).unsqueeze(1) - nb.times.to(dev)).clamp_min(0)
        hk = self.W_k(torch.cat([h_n, self.time_enc(dt).to(h_n.dtype)], -1))
        h_c = self.W_f(self.node_input(mem[centres], centres))
        hq = self.W_q(h_c).unsqueeze(1).expand_as(hk)
        score = F.leaky_relu(self.att(self.drop(torch.cat([hq, hk], -1))).squeeze(-1), 0.2)
        score = score.masked_fill(~mask, float("-inf"))
        has = mask.any(1, keepdim=True)
        a = torch.where(has, torch.softmax(torch.where(has, score, 0.0), 1), 0.0)
        msg = (a.unsqueeze(-1) * hk).sum(1)  # (2B, d)
        msg_s, msg_d = msg[:b], msg[b:]
        if cfg.use_ib and cfg.ib_on_messages:
            ls, ld = c_lab[:b], c_lab[b:]
            cross_e = (ls < 0) | (ld < 0) | (ls != ld)
            if cross_e.any():
                if self.training:
                    for m_, l_ in ((msg_s, ls), (msg_d, ld)):
                        ok = cross_e & (l_ >= 0)
                        self.ib.remember(m_[ok], l_[ok])
                ce = cross_e.unsqueeze(-1)
                msg_s = torch.where(ce, self.ib.encode(msg_s), msg_s)
                msg_d = torch.where(ce, self.ib.encode(msg_d), msg_d)
        h = torch.tanh(torch.cat([msg_s, msg_d], -1))
        he = torch.tanh(self.W_e(self.edge_rows(eid)))
        new_s = torch.tanh(self.W_uc(torch.cat([mem[src.to(dev)], h, he], -1)))
        new_d = torch.tanh(self.W_uc(torch.cat([mem[dst.to(dev)], h, he], -1)))
        if write_memory:
            self.memory.write(centres, torch.cat([new_s, new_d]))
        hid, logits = self.classify(torch.cat([new_s, new_d]), centres)
        return EdgeOutput(logits[:b], logits[b:], new_s, new_d, hid[:b], hid[b:])

    def ib_step(self, epoch_in_task: int) -> dict[str, float]:
        """Train the bottleneck on its cache (estimators only in the first epochs of a task)."""
        if not self.config.use_ib:
            return {}
        return self.ib.step(train_estimators=epoch_in_task < self.config.ib_estimator_epochs)
