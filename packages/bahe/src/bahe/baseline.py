"""The baseline BAHE is measured against: a naive LLM-based CTR model that runs the concatenated
behaviour text, token by token, through the LM at every training step (BAHE §1, the "length
barrier").

Each row's behaviours are tokenised (each truncated to the same ``max_behavior_tokens`` as the
store), joined with a separator token, family after family, into one sequence of
``sum_f M_f * (K + 1)`` tokens. Two variants:

* ``train_lower=True`` ("naive_full"): every layer is fine-tuned;
* ``train_lower=False`` ("naive_frozen"): the lower layers are frozen but still run over the
  tokens at every step (under ``no_grad``), the upper layers are trained over tokens.

Each family's tokens are pooled (the LM's pooling: mean or last token of the family's segment)
into the same ``[B, F*d]`` user embedding BAHE produces; the item title goes through the same LM
path; the head is the same MLP over ``[user, item, ids]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import CTRData
from .lm import SplitLM, pool
from .model import CTRHead, IdEmbeddings, head_input_dim, join_features

__all__ = ["NaiveCTR", "NaiveConfig"]


@dataclass(frozen=True)
class NaiveConfig:
    """The naive token-level model. ``max_tokens`` caps the concatenated sequence (``None``: no
    cap; the sequence must then fit the LM's position table)."""

    families: tuple[str, ...]
    max_behaviors: int = 64
    train_lower: bool = True
    max_tokens: int | None = None
    id_features: tuple[str, ...] = ()
    id_buckets: int = 1 << 16
    id_dim: int = 16
    head_hidden: tuple[int, ...] = (128, 64)
    interactions: bool = True
    head_norm: str = "batch"

    def __post_init__(self) -> None:
        if not self.families or len(set(self.families)) != len(self.families):
            raise ValueError(f"families must be distinct and non-empty, got {self.families!r}")
        if self.max_behaviors < 1:
            raise ValueError(f"max_behaviors must be >= 1, got {self.max_behaviors}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {self.max_tokens}")


def _segment_pool(h: torch.Tensor, m: torch.Tensor, how: str) -> torch.Tensor:
    """Pool ``h [B, T, d]`` over the positions where ``m [B, T]`` (one family's segment):
    masked mean, or the segment's last / first position (a segment may sit mid-sequence)."""
    if how == "mean":
        w = m.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)
    pos = torch.arange(h.shape[1], device=h.device).expand_as(m)
    if how == "last":
        at = torch.where(m, pos, -1).max(1).values.clamp_min(0)
    else:  # "cls": the segment's first token
        at = torch.where(m, pos, h.shape[1]).min(1).values.clamp_max(h.shape[1] - 1)
    return h[torch.arange(h.shape[0], device=h.device), at]


class NaiveCTR(nn.Module):
    """Token-level LLM-CTR over the concatenated behaviour text (the paper's baseline)."""

    def __init__(self, lm: SplitLM, config: NaiveConfig) -> None:
        super().__init__()
        self.lm = lm
        self.config = config
        self.kind = "naive_full" if config.train_lower else "naive_frozen"
        if config.train_lower:
            # register the whole model and make every layer trainable
            self.full = lm.full
            for p in self.full.parameters():
                p.requires_grad_(True)
        tok = lm.tokenizer
        self.sep_id = next(
            (t for t in (tok.sep_token_id, tok.eos_token_id, tok.pad_token_id) if t is not None), 0
        )
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        d = lm.hidden_size
        self.ids = IdEmbeddings(config.id_features, config.id_buckets, config.id_dim)
        self.head = CTRHead(
            head_input_dim(d, len(config.families), self.ids.out_dim, config.interactions),
            config.head_hidden,
            norm=config.head_norm,
        )
        self._tokens: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ tokens

    def _token_ids(self, data: CTRData, keys: np.ndarray) -> None:
        todo = [int(k) for k in np.unique(keys) if int(k) not in self._tokens]
        if not todo:
            return
        texts = [data.catalog.text(k) for k in todo]
        enc = self.lm.tokenizer(
            texts,
            add_special_tokens=False,
            truncation=True,
            max_length=self.lm.max_behavior_tokens,
        )["input_ids"]
        for k, ids in zip(todo, enc, strict=True):
            if not ids:
                raise ValueError(f"behaviour {data.catalog.text(k)!r} tokenises to nothing")
            self._tokens[k] = np.asarray(ids, np.int64)

    def featurize(self, data: CTRData, idx: np.ndarray) -> dict[str, torch.Tensor]:
        cfg = self.config
        seqs, segs = [], []
        for i in idx:
            toks, seg = [], []
            for j, f in enumerate(cfg.families):
                ln = int(data.lengths[f][i])
                keys = data.behaviors[f][i, max(0, ln - cfg.max_behaviors) : ln]
                self._token_ids(data, keys)
                for k in keys:
                    t = self._tokens[int(k)]
                    toks.append(t)
                    toks.append(np.array([self.sep_id]))
                    seg.append(np.full(len(t) + 1, j))
            ids = np.concatenate(toks) if toks else np.array([self.sep_id])
            sg = np.concatenate(seg) if seg else np.array([-1])
            if cfg.max_tokens is not None:
                ids, sg = ids[: cfg.max_tokens], sg[: cfg.max_tokens]
            seqs.append(ids)
            segs.append(sg)
        T = max(len(s) for s in seqs)
        ids = np.full((len(idx), T), self.pad_id, np.int64)
        seg = np.full((len(idx), T), -1, np.int64)
        for r, (s, g) in enumerate(zip(seqs, segs, strict=True)):
            ids[r, : len(s)] = s
            seg[r, : len(g)] = g
        mask = (np.arange(T)[None, :] < np.array([len(s) for s in seqs])[:, None]).astype(np.int64)
        # item titles
        self._token_ids(data, data.item_keys[idx])
        titles = [self._tokens[int(k)] for k in data.item_keys[idx]]
        Ti = max(len(t) for t in titles)
        item = np.full((len(idx), Ti), self.pad_id, np.int64)
        imask = np.zeros((len(idx), Ti), np.int64)
        for r, t in enumerate(titles):
            item[r, : len(t)] = t
            imask[r, : len(t)] = 1
        out = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "segments": torch.from_numpy(seg),
            "item_ids": torch.from_numpy(item),
            "item_mask": torch.from_numpy(imask),
            "labels": torch.from_numpy(data.labels[idx]),
        }
        out.update(self.ids.featurize(data, idx))
        return out

    # ------------------------------------------------------------------ forward

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.config.train_lower:
            return self.full(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        return self.lm.upper_hidden(self.lm.lower_hidden(ids, mask), mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        dev = self.head.device
        ids, mask, seg = (batch[k].to(dev) for k in ("input_ids", "attention_mask", "segments"))
        h = self._hidden(ids, mask)
        users = []
        for j in range(len(self.config.families)):
            m = seg == j
            # a family without tokens pools to zeros ("last" then picks position 0)
            users.append(_segment_pool(h, m, self.lm.pooling))
        item_ids, item_mask = batch["item_ids"].to(dev), batch["item_mask"].to(dev)
        hi = self._hidden(item_ids, item_mask)
        item = pool(hi, item_mask, self.lm.pooling)
        ide = self.ids({k: v.to(dev) for k, v in batch.items() if k.startswith("id:")})
        return self.head(
            join_features(torch.cat(users, dim=-1), item, ide, self.config.interactions)
        )
