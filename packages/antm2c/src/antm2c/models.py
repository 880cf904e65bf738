"""Single-scenario CTR model zoo over one base class (FuxiCTR-style).

:class:`CTRModel` owns everything feature-shaped: one embedding table for all sparse fields
(field offsets), one for all text fields (masked mean of token embeddings = a bag of words per
field), FM-style vectors for numeric fields (``v_k * x_k``), an optional projection of an item
image embedding, and the first-order (logistic-regression) weights. A subclass only says what to
do with the field matrix ``E`` of shape ``[B, F, d]``:

* :class:`LR`: first-order terms only;
* :class:`DNN`: an MLP over ``flatten(E)``;
* :class:`DeepFM` (Guo et al. 2017): first order + factorisation-machine pairwise term + MLP;
* :class:`DCNv2` (Wang et al. 2021): full-rank cross layers ``x_{l+1} = x_0 * (W x_l + b) + x_l``
  in parallel with an MLP;
* :class:`AutoInt` (Song et al. 2019): multi-head self-attention over fields with residuals;
* :class:`DIN` (Zhou et al. 2018): target attention over the user's textual behaviours.

The AntM2C papers name these families as baselines but their result tables were not available to
us; hyper-parameters here are ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .features import Batch, FeatureEncoder

__all__ = [
    "DIN",
    "DNN",
    "LR",
    "MLP",
    "AutoInt",
    "CTRModel",
    "DCNv2",
    "DeepFM",
    "FieldLayout",
    "fm_interaction",
]


@dataclass(frozen=True)
class FieldLayout:
    """Cardinalities and sizes a model needs (from a fitted :class:`FeatureEncoder`)."""

    sparse: tuple[int, ...]
    sequences: tuple[int, ...] = ()
    n_dense: int = 0
    image_dim: int = 0
    n_scenes: int = 5
    sequence_names: tuple[str, ...] = ()
    sparse_names: tuple[str, ...] = ()

    @classmethod
    def from_encoder(cls, enc: FeatureEncoder, n_scenes: int = 5) -> FieldLayout:
        return cls(
            tuple(enc.sparse_cardinalities),
            tuple(enc.sequence_cardinalities),
            len(enc.spec.dense),
            enc.image_dim,
            n_scenes,
            tuple(enc.spec.sequences),
            tuple(enc.spec.sparse),
        )

    @property
    def n_fields(self) -> int:
        return len(self.sparse) + len(self.sequences) + self.n_dense + (1 if self.image_dim else 0)


class MLP(nn.Sequential):
    """Linear -> ReLU (-> dropout) blocks."""

    def __init__(
        self, d_in: int, hidden: Sequence[int], dropout: float = 0.0, out: int | None = None
    ) -> None:
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d_in, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d_in = h
        if out is not None:
            layers.append(nn.Linear(d_in, out))
        super().__init__(*layers)
        self.d_out = out if out is not None else d_in


def fm_interaction(e: torch.Tensor) -> torch.Tensor:
    """Bi-interaction pooling 0.5 * ((sum_f e_f)^2 - sum_f e_f^2), shape [B, d].

    Summed over ``d`` it is the FM second-order term sum_{i<j} <e_i, e_j> (Rendle 2010)."""
    s = e.sum(1)
    return 0.5 * (s * s - (e * e).sum(1))


def _offsets(cards: Sequence[int]) -> torch.Tensor:
    off = [0]
    for c in cards[:-1]:
        off.append(off[-1] + int(c))
    return torch.tensor(off, dtype=torch.long)


class CTRModel(nn.Module):
    """Base class: feature embeddings + first-order term; subclasses implement :meth:`logit`."""

    name = "base"

    def __init__(self, layout: FieldLayout, embed_dim: int = 16) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError("embed_dim must be >= 1")
        self.layout, self.embed_dim = layout, embed_dim
        n_sp = sum(layout.sparse)
        self.register_buffer(
            "sp_off",
            _offsets(layout.sparse) if layout.sparse else torch.zeros(0, dtype=torch.long),
            persistent=False,
        )
        self.register_buffer(
            "seq_off",
            _offsets(layout.sequences) if layout.sequences else torch.zeros(0, dtype=torch.long),
            persistent=False,
        )
        # sparse gradients: only the rows a batch touches are updated (see antm2c.train)
        self.sp_emb = nn.Embedding(max(n_sp, 1), embed_dim, sparse=True)
        self.sp_w = nn.Embedding(max(n_sp, 1), 1, sparse=True)
        n_seq = sum(layout.sequences)
        self.seq_emb = nn.Embedding(max(n_seq, 1), embed_dim, sparse=True)
        self.seq_w = nn.Embedding(max(n_seq, 1), 1, sparse=True)
        self.dense_v = nn.Parameter(torch.randn(layout.n_dense, embed_dim) * 0.01)
        self.dense_w = nn.Linear(max(layout.n_dense, 1), 1, bias=False)
        self.image_proj = nn.Linear(layout.image_dim, embed_dim) if layout.image_dim else None
        self.bias = nn.Parameter(torch.zeros(1))
        for emb in (self.sp_emb, self.seq_emb):
            nn.init.normal_(emb.weight, std=0.01)
        for emb in (self.sp_w, self.seq_w):
            nn.init.zeros_(emb.weight)

    @property
    def n_fields(self) -> int:
        return self.layout.n_fields

    def _seq_pool(self, table: nn.Embedding, seq: torch.Tensor) -> torch.Tensor:
        idx = seq + self.seq_off.view(1, -1, 1)
        mask = (seq > 0).unsqueeze(-1).to(table.weight.dtype)
        e = table(idx) * mask
        return e.sum(2) / mask.sum(2).clamp_min(1.0)

    def embed(self, batch: Batch) -> torch.Tensor:
        """Field matrix ``E`` of shape [B, F, d] (sparse, text, dense, image fields in order)."""
        parts = []
        if self.layout.sparse:
            parts.append(self.sp_emb(batch["sparse"] + self.sp_off))
        if self.layout.sequences:
            parts.append(self._seq_pool(self.seq_emb, batch["seq"]))
        if self.layout.n_dense:
            parts.append(batch["dense"].unsqueeze(-1) * self.dense_v)
        if self.image_proj is not None:
            parts.append(self.image_proj(batch["image"]).unsqueeze(1))
        return torch.cat(parts, 1)

    def linear_logit(self, batch: Batch) -> torch.Tensor:
        """First-order term sum_f w_f(x_f) + b, shape [B]."""
        z = self.bias.expand(len(batch["label"]))
        if self.layout.sparse:
            z = z + self.sp_w(batch["sparse"] + self.sp_off).sum((1, 2))
        if self.layout.sequences:
            z = z + self._seq_pool(self.seq_w, batch["seq"]).sum((1, 2))
        if self.layout.n_dense:
            z = z + self.dense_w(batch["dense"]).squeeze(-1)
        return z

    def logit(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.logit(batch)


class LR(CTRModel):
    """Logistic regression on one-hot / bag-of-words / numeric features."""

    name = "lr"

    def logit(self, batch: Batch) -> torch.Tensor:
        return self.linear_logit(batch)


class DNN(CTRModel):
    """MLP over the concatenated field embeddings."""

    name = "dnn"

    def __init__(
        self,
        layout: FieldLayout,
        embed_dim: int = 16,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(layout, embed_dim)
        self.mlp = MLP(self.n_fields * embed_dim, hidden, dropout, out=1)

    def logit(self, batch: Batch) -> torch.Tensor:
        return self.mlp(self.embed(batch).flatten(1)).squeeze(-1)


class DeepFM(CTRModel):
    """First order + FM pairwise interactions + MLP, sharing one embedding (Guo et al. 2017)."""

    name = "deepfm"

    def __init__(
        self,
        layout: FieldLayout,
        embed_dim: int = 16,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(layout, embed_dim)
        self.mlp = MLP(self.n_fields * embed_dim, hidden, dropout, out=1)

    def logit(self, batch: Batch) -> torch.Tensor:
        e = self.embed(batch)
        fm = fm_interaction(e).sum(-1)
        return self.linear_logit(batch) + fm + self.mlp(e.flatten(1)).squeeze(-1)


class DCNv2(CTRModel):
    """DCN-V2 (parallel): full-rank cross network and an MLP on the same input, then a linear
    head on their concatenation (Wang et al. 2021, Eq. 1)."""

    name = "dcnv2"

    def __init__(
        self,
        layout: FieldLayout,
        embed_dim: int = 16,
        n_cross: int = 3,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(layout, embed_dim)
        d = self.n_fields * embed_dim
        self.cross = nn.ModuleList(nn.Linear(d, d) for _ in range(n_cross))
        for lin in self.cross:
            nn.init.normal_(lin.weight, std=0.01)
            nn.init.zeros_(lin.bias)
        self.mlp = MLP(d, hidden, dropout)
        self.head = nn.Linear(d + self.mlp.d_out, 1)

    def logit(self, batch: Batch) -> torch.Tensor:
        x0 = self.embed(batch).flatten(1)
        x = x0
        for lin in self.cross:
            x = x0 * lin(x) + x
        return self.head(torch.cat([x, self.mlp(x0)], 1)).squeeze(-1) + self.linear_logit(batch)


class AutoInt(CTRModel):
    """AutoInt: stacked multi-head self-attention over field embeddings with residual
    connections, then a linear head (Song et al. 2019); plus the first-order term."""

    name = "autoint"

    def __init__(
        self,
        layout: FieldLayout,
        embed_dim: int = 16,
        n_layers: int = 2,
        n_heads: int = 2,
        attn_dim: int = 32,
    ) -> None:
        super().__init__(layout, embed_dim)
        if attn_dim % n_heads:
            raise ValueError("attn_dim must be divisible by n_heads")
        self.inp = nn.Linear(embed_dim, attn_dim)
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(attn_dim, n_heads, batch_first=True) for _ in range(n_layers)
        )
        self.res = nn.ModuleList(nn.Linear(attn_dim, attn_dim) for _ in range(n_layers))
        self.head = nn.Linear(self.n_fields * attn_dim, 1)

    def logit(self, batch: Batch) -> torch.Tensor:
        h = self.inp(self.embed(batch))
        for att, res in zip(self.attn, self.res, strict=True):
            a, _ = att(h, h, h, need_weights=False)
            h = torch.relu(a + res(h))
        return self.head(h.flatten(1)).squeeze(-1) + self.linear_logit(batch)


class DIN(CTRModel):
    """DIN (Zhou et al. 2018) over *textual* behaviours: the user's bill/service/query entity
    tokens are the behaviour sequence, the target item is its id embedding plus its title bag;
    an activation unit scores each behaviour from ``[q, k, q - k, q * k]`` (unnormalised, as in
    DIN), the weighted sum is the user interest, concatenated with all field embeddings into an
    MLP. AntM2C has no item-id click history, so this adaptation is ours; it needs the user
    text fields in the feature spec (e.g. the ``text`` or ``full`` preset)."""

    name = "din"
    USER_FIELDS = ("bill_entity_seq", "service_entity_seq", "query_entity_seq")

    def __init__(
        self,
        layout: FieldLayout,
        embed_dim: int = 16,
        hidden: Sequence[int] = (256, 128),
        att_hidden: Sequence[int] = (64,),
    ) -> None:
        super().__init__(layout, embed_dim)
        self.user_idx = [i for i, n in enumerate(layout.sequence_names) if n in self.USER_FIELDS]
        if not self.user_idx:
            raise ValueError(
                "DIN needs user behaviour text fields (bill/service/query entity "
                "sequences) in the feature spec, e.g. FeatureSpec.preset('text')"
            )
        names = layout.sequence_names
        self.title_idx = names.index("item_title") if "item_title" in names else None
        self.item_idx = (
            layout.sparse_names.index("item_id") if "item_id" in layout.sparse_names else None
        )
        self.att = MLP(4 * embed_dim, att_hidden, out=1)
        self.mlp = MLP((self.n_fields + 1) * embed_dim, hidden, out=1)

    def logit(self, batch: Batch) -> torch.Tensor:
        e = self.embed(batch)
        seq = batch["seq"]
        q = torch.zeros(len(seq), self.embed_dim, device=seq.device, dtype=e.dtype)
        if self.item_idx is not None:
            q = q + e[:, self.item_idx]
        n_sp = len(self.layout.sparse)
        if self.title_idx is not None:
            q = q + e[:, n_sp + self.title_idx]
        beh = seq[:, self.user_idx]  # [B, U, L]
        k = self.seq_emb(beh + self.seq_off[self.user_idx].view(1, -1, 1)).flatten(1, 2)
        mask = (beh > 0).flatten(1).unsqueeze(-1).to(k.dtype)  # [B, U*L, 1]
        qq = q.unsqueeze(1).expand_as(k)
        w = self.att(torch.cat([qq, k, qq - k, qq * k], -1)) * mask
        interest = (w * k).sum(1)
        h = torch.cat([e.flatten(1), interest], 1)
        return self.mlp(h).squeeze(-1) + self.linear_logit(batch)
