"""LLM-Rec: one language model encodes users and items; score = inner product (§3.2.3-3.2.4).

* :func:`pool`: Eq. 3-4. ``"cls"`` takes the first attended token (where ``[CLS]`` sits),
  ``"last"`` the last attended token (where ``</s>`` sits), ``"mean"`` the masked mean (how
  all-MiniLM-L6-v2 was trained). Positions come from the attention mask, so left and right
  padding give the same vectors (the official ``mask.sum() - 1`` index is only right-padding safe).
* :class:`LLMRec`: shared user/item tower, Eq. 5 score ``h_u · h_v``, Eq. 6 loss: cross-entropy
  over the positive and ``S`` same-domain negatives (optionally plus the batch's other positives).
* :meth:`LLMRec.item_vectors`: the evaluation cache, the whole catalogue encoded in length-sorted
  batches under ``torch.no_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone
from .text import TitleTokens, collate

__all__ = ["LLMRec", "ModelConfig", "pool"]


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``hidden`` [B, L, d] with ``mask`` [B, L] (1 = token) into [B, d]."""
    if mode not in ("cls", "last", "mean"):
        raise ValueError(f"pooling must be 'cls', 'last' or 'mean', got {mode!r}")
    m = mask.bool()
    if not m.any(1).all():
        raise ValueError("every row needs at least one attended token")
    if mode == "mean":
        h = torch.where(m[..., None], hidden, torch.zeros((), dtype=hidden.dtype))
        return h.sum(1) / m.sum(1, keepdim=True).to(hidden.dtype)
    L = m.shape[1]
    if mode == "cls":
        idx = m.to(torch.int8).argmax(1)
    else:
        idx = L - 1 - m.flip(1).to(torch.int8).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


@dataclass(frozen=True)
class ModelConfig:
    """Text and pooling options of :class:`LLMRec`.

    ``pooling="auto"`` is ``"cls"`` for encoders and ``"last"`` for decoders (the paper).
    ``max_user_tokens`` caps a user text (default: ``history_len * max_title_tokens + 1``).
    """

    pooling: str = "auto"
    template: str = "{title}; "
    max_title_tokens: int = 40
    max_user_tokens: int | None = None
    padding_side: str = "right"

    def __post_init__(self) -> None:
        if self.pooling not in ("auto", "cls", "last", "mean"):
            raise ValueError(f"pooling must be auto, cls, last or mean, got {self.pooling!r}")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be right or left, got {self.padding_side!r}")
        if self.max_title_tokens < 1:
            raise ValueError("max_title_tokens must be >= 1")
        if self.max_user_tokens is not None and self.max_user_tokens < 2:
            raise ValueError("max_user_tokens must be >= 2")


class LLMRec(nn.Module):
    """One backbone for users and items (shared weights, "one model for all")."""

    def __init__(self, backbone: Backbone, titles: list[str], config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        self.backbone = backbone.model
        self.kind = backbone.kind
        self.spec = backbone.spec
        self.tokenizer = backbone.tokenizer
        self.special_id, self.pad_id = backbone.special_id, backbone.pad_id
        self.pooling = self.config.pooling
        if self.pooling == "auto":
            self.pooling = "cls" if self.kind == "encoder" else "last"
        self.tokens = TitleTokens(
            backbone.tokenizer,
            titles,
            template=self.config.template,
            max_title_tokens=self.config.max_title_tokens,
        )
        limit = getattr(self.backbone.config, "max_position_embeddings", None) or getattr(
            self.backbone.config, "n_positions", 512
        )
        self.max_len = min(int(limit), self.config.max_user_tokens or int(limit))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def n_items(self) -> int:
        return len(self.tokens)

    # ------------------------------------------------------------------ encoding
    def encode_ids(self, seqs: list[list[int]]) -> torch.Tensor:
        """Encode token sequences (special token added here) into pooled vectors [B, d]."""
        ids, mask = collate(
            seqs,
            special_id=self.special_id,
            pad_id=self.pad_id,
            kind=self.kind,
            padding_side=self.config.padding_side,
            max_len=self.max_len,
        )
        ids, mask = ids.to(self.device), mask.to(self.device)
        # positions count attended tokens, so left padding does not shift them
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.backbone(input_ids=ids, attention_mask=mask, position_ids=pos)
        return pool(out.last_hidden_state, mask, self.pooling)

    def _check_items(self, items: np.ndarray) -> None:
        if items.size and (items.min() < 1 or items.max() > self.n_items):
            bad = items[(items < 1) | (items > self.n_items)][0]
            raise IndexError(f"item index {int(bad)} outside the catalogue 1..{self.n_items}")

    def encode_items(self, items: np.ndarray | torch.Tensor) -> torch.Tensor:
        items = np.asarray(items.cpu() if isinstance(items, torch.Tensor) else items).reshape(-1)
        self._check_items(items)
        return self.encode_ids(self.tokens.items(items))

    def encode_users(self, hist: np.ndarray | torch.Tensor) -> torch.Tensor:
        """User vectors from histories [B, H] (item indices, 0 = padding)."""
        hist = np.asarray(hist.cpu() if isinstance(hist, torch.Tensor) else hist)
        if hist.ndim != 2:
            raise ValueError(f"histories must be [batch, history_len], got shape {hist.shape}")
        nz = hist[hist > 0]
        self._check_items(nz)
        if (hist < 0).any():
            raise IndexError("negative item index in a history")
        return self.encode_ids(self.tokens.users(hist))

    # ------------------------------------------------------------------ scoring and loss
    def score(self, hist: np.ndarray, candidates: np.ndarray) -> torch.Tensor:
        """Scores [B, C] of each user's candidates (Eq. 5); every distinct item encoded once."""
        cand = np.asarray(candidates)
        uniq, inv = np.unique(cand, return_inverse=True)
        item_vecs = self.encode_items(uniq)
        users = self.encode_users(hist)
        inv_t = torch.as_tensor(inv.reshape(cand.shape), device=users.device)
        return torch.einsum("bd,bcd->bc", users, item_vecs[inv_t])

    def forward(
        self,
        hist: np.ndarray,
        targets: np.ndarray,
        negatives: np.ndarray,
        *,
        in_batch: bool = False,
    ) -> torch.Tensor:
        """The training loss, Eq. 6: mean cross-entropy of the positive against its ``S``
        negatives. (``forward`` is the loss so that DDP's gradient hooks see the call.)

        The positive is column 0 of the logits (its position does not change the loss).
        ``in_batch=True`` adds the other examples' positives as extra negatives (an item equal
        to the example's own positive is masked out).
        """
        targets = np.asarray(targets).reshape(-1)
        negatives = np.asarray(negatives).reshape(len(targets), -1)
        if (negatives == targets[:, None]).any():
            raise ValueError("a negative equals its positive; sample negatives without it")
        cand = np.concatenate([targets[:, None], negatives], axis=1)
        if not in_batch:
            logits = self.score(hist, cand)
        else:
            uniq, inv = np.unique(np.concatenate([cand.reshape(-1), targets]), return_inverse=True)
            item_vecs = self.encode_items(uniq)
            users = self.encode_users(hist)
            ci = torch.as_tensor(inv[: cand.size].reshape(cand.shape), device=users.device)
            ti = torch.as_tensor(inv[cand.size :], device=users.device)
            own = torch.einsum("bd,bcd->bc", users, item_vecs[ci])
            other = users @ item_vecs[ti].T  # [B, B]
            same = torch.as_tensor(targets[None, :] == targets[:, None], device=users.device)
            other = other.masked_fill(same, float("-inf"))
            logits = torch.cat([own, other], dim=1)
        zeros = torch.zeros(len(targets), dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, zeros)

    # ------------------------------------------------------------------ evaluation cache
    @torch.no_grad()
    def item_vectors(self, batch_size: int = 256) -> torch.Tensor:
        """All item vectors [N+1, d] (row 0 zeros), encoded in length-sorted no-grad batches."""
        was = self.training
        self.eval()
        try:
            order = np.argsort([len(x) for x in self.tokens.ids[1:]], kind="stable") + 1
            out = None
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                v = self.encode_items(idx)
                if out is None:
                    out = torch.zeros(self.n_items + 1, v.shape[1], dtype=v.dtype, device=v.device)
                out[torch.as_tensor(idx, device=v.device)] = v
            return out
        finally:
            self.train(was)

    @torch.no_grad()
    def user_vectors(self, hist: np.ndarray, batch_size: int = 128) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            parts = [
                self.encode_users(hist[s : s + batch_size]) for s in range(0, len(hist), batch_size)
            ]
            return torch.cat(parts) if parts else torch.zeros(0)
        finally:
            self.train(was)
