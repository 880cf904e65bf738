"""SASRec (Kang & McAuley, ICDM 2018): the ID-based baseline of Table 4.

Faithful to the paper: item embeddings scaled by sqrt(d) plus learned positions, dropout, ``L``
blocks of [LayerNorm -> causal multi-head self-attention (query normalised, keys/values not) ->
residual -> LayerNorm -> point-wise two-layer feed-forward (ReLU) -> residual], padding positions
zeroed after every block, a final LayerNorm; a position's score for item ``i`` is the inner
product with ``i``'s (shared) embedding. Training: binary cross-entropy on every position's next
item against one negative sampled uniformly from the items the user never interacted with.

Here it runs on the user-mixed (merged-ID) sequences, the multi-domain set-up of Fig. 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared import progress, seed_everything

from .preprocess import RecData

__all__ = ["SASRec", "SASRecConfig", "train_sasrec"]


@dataclass(frozen=True)
class SASRecConfig:
    """Hyper-parameters (paper defaults for sparse Amazon data: d=50, 2 blocks, 1 head,
    dropout 0.5, Adam lr 1e-3, betas (0.9, 0.98), batch 128, max length 50)."""

    hidden: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    max_len: int = 50
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 40
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if min(self.hidden, self.blocks, self.heads, self.max_len, self.batch_size) < 1:
            raise ValueError("hidden, blocks, heads, max_len and batch_size must be >= 1")
        if self.hidden % self.heads:
            raise ValueError("heads must divide hidden")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.epochs < 0 or self.lr <= 0:
            raise ValueError("epochs must be >= 0 and lr > 0")


class _FFN(nn.Module):
    def __init__(self, d: int, p: float) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(d, d), nn.Linear(d, d)
        self.drop1, self.drop2 = nn.Dropout(p), nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop2(self.w2(self.drop1(F.relu(self.w1(x)))))


class SASRec(nn.Module):
    def __init__(self, n_items: int, config: SASRecConfig | None = None) -> None:
        super().__init__()
        c = self.config = config or SASRecConfig()
        self.n_items = n_items
        self.item_emb = nn.Embedding(n_items + 1, c.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(c.max_len, c.hidden)
        self.drop = nn.Dropout(c.dropout)
        self.attn_ln = nn.ModuleList(nn.LayerNorm(c.hidden, eps=1e-8) for _ in range(c.blocks))
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(c.hidden, c.heads, dropout=c.dropout, batch_first=True)
            for _ in range(c.blocks)
        )
        self.ffn_ln = nn.ModuleList(nn.LayerNorm(c.hidden, eps=1e-8) for _ in range(c.blocks))
        self.ffn = nn.ModuleList(_FFN(c.hidden, c.dropout) for _ in range(c.blocks))
        self.last_ln = nn.LayerNorm(c.hidden, eps=1e-8)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, d] of left-padded item sequences [B, L] (L <= max_len)."""
        L = seq.shape[1]
        if self.config.max_len < L:
            raise ValueError(f"sequence length {L} exceeds max_len {self.config.max_len}")
        x = self.item_emb(seq) * math.sqrt(self.config.hidden)
        x = x + self.pos_emb(torch.arange(L, device=seq.device))[None]
        keep = (seq > 0)[..., None].to(x.dtype)
        x = self.drop(x) * keep
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=seq.device), 1)
        for ln, attn, ln2, ffn in zip(self.attn_ln, self.attn, self.ffn_ln, self.ffn, strict=True):
            q = ln(x)
            out, _ = attn(q, x, x, attn_mask=causal, need_weights=False)
            x = q + out
            x = ffn(ln2(x)) * keep
        return self.last_ln(x)

    def user_vectors(self, hist: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
        """The last position's hidden state for each left-padded history [E, H]."""
        was = self.training
        self.eval()
        hist = np.asarray(hist)[:, -self.config.max_len :]
        if hist.shape[1] < self.config.max_len:  # positions as in training: last item at L-1
            pad = np.zeros((len(hist), self.config.max_len - hist.shape[1]), dtype=hist.dtype)
            hist = np.concatenate([pad, hist], axis=1)
        dev = self.item_emb.weight.device
        try:
            with torch.no_grad():
                parts = [
                    self.hidden(torch.as_tensor(hist[s : s + batch_size], device=dev))[:, -1]
                    for s in range(0, len(hist), batch_size)
                ]
            return torch.cat(parts)
        finally:
            self.train(was)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight.detach().clone()


def _training_arrays(data: RecData, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-item targets per user from the training part (left padded)."""
    seqs = [s[:-2] for s in data.seqs]
    inp = np.zeros((len(seqs), max_len), dtype=np.int64)
    pos = np.zeros((len(seqs), max_len), dtype=np.int64)
    for u, s in enumerate(seqs):
        s = s[-(max_len + 1) :]
        n = len(s) - 1
        if n > 0:
            inp[u, max_len - n :] = s[:-1]
            pos[u, max_len - n :] = s[1:]
    return inp, pos


def train_sasrec(
    data: RecData, config: SASRecConfig | None = None, *, desc: str = "SASRec"
) -> SASRec:
    """Train SASRec on every user's merged training sequence (BCE, one negative per position)."""
    c = config or SASRecConfig()
    seed_everything(c.seed)
    rng = np.random.default_rng(c.seed)
    model = SASRec(data.n_items, c).to(c.device)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr, betas=(0.9, 0.98))
    inp, pos = _training_arrays(data, c.max_len)
    n1 = data.n_items + 1
    seen = np.unique(np.concatenate([u * n1 + s[:-2] for u, s in enumerate(data.seqs)]))
    users = np.flatnonzero((pos > 0).any(1))
    model.train()
    for _ in progress(range(c.epochs), desc=desc):
        rng.shuffle(users)
        for s in range(0, len(users), c.batch_size):
            b = users[s : s + c.batch_size]
            neg = rng.integers(1, n1, size=pos[b].shape)
            while True:  # resample negatives the user interacted with
                bad = np.isin(b[:, None] * n1 + neg, seen)
                if not bad.any():
                    break
                neg[bad] = rng.integers(1, n1, size=int(bad.sum()))
            seq = torch.as_tensor(inp[b], device=c.device)
            p = torch.as_tensor(pos[b], device=c.device)
            n = torch.as_tensor(neg, device=c.device)
            h = model.hidden(seq)
            pl = (h * model.item_emb(p)).sum(-1)
            nl = (h * model.item_emb(n)).sum(-1)
            m = p > 0
            loss = F.binary_cross_entropy_with_logits(
                pl[m], torch.ones_like(pl[m])
            ) + F.binary_cross_entropy_with_logits(nl[m], torch.zeros_like(nl[m]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model
