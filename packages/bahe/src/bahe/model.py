"""BAHE's CTR model: trainable upper LM layers over sequences of stored behaviour vectors, one
pass per behaviour family, joined with the item embedding and ID features (BAHE §2,
"behaviour aggregation" and "CTR modelling").

For a batch of ``B`` rows with ``F`` families of at most ``M`` behaviours:

1. look up the behaviour vectors in the store (``[B, F, M, d]``, the lower layers' pooled output,
   computed once per unique behaviour offline);
2. an adapter (LayerNorm with affine, ours) plus a learned behaviour-position embedding and a
   family-type embedding (ours; the paper's exact input construction is not public);
3. "feature parallelism": reshape to ``[B*F, M, d]`` and run the upper layers once; each family
   is its own sequence, so the attention cost is ``F * M^2`` instead of ``(F*M*K)^2``;
4. pool each family's output (masked mean for encoders, last behaviour for causal decoders) and
   concatenate into the user embedding ``[B, F*d]``;
5. the item title is an atomic unit too: its stored vector goes through the same adapter and
   upper layers as a one-element sequence (``item_upper=True``), giving ``[B, d]``;
6. an MLP head over ``[user, item, id embeddings]`` gives the click logit; training is BCE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import CTRData
from .lm import SplitLM, pool
from .store import BehaviorStore

__all__ = ["BAHECTR", "BAHEConfig", "CTRHead", "IdEmbeddings"]

USER_POOLS = ("mean", "last", "first")


@dataclass(frozen=True)
class BAHEConfig:
    """Architecture of the CTR model around the upper layers (all choices ours; see README).

    Args:
        families: behaviour families, in the order the data lists them.
        max_behaviors: longest behaviour sequence per family (older ones are dropped).
        user_pool: pooling of the upper layers' output per family: ``"mean"``, ``"last"``,
            ``"first"`` or ``None`` (mean for encoders, last for causal decoders).
        item_upper: run the item title vector through the upper layers (else adapter only).
        adapter: centre stored vectors on the store's mean, then LayerNorm (affine), before
            the upper layers (pooled vectors share a large common direction).
        behavior_positions, family_embeddings: learned embeddings added to the inputs.
        id_features: names of hashed ID features in the data (``CTRData.ids``) to embed.
        id_buckets, id_dim: hashing buckets and width of each ID embedding.
        head_hidden: hidden widths of the MLP head.
        head_norm: ``"batch"`` (BatchNorm on the head input, as CTR MLPs commonly use) or
            ``"none"``.
        interactions: also feed the head each family's user vector times the item vector
            (element-wise), a two-tower style match feature (ours).
        missing: a behaviour absent from the store: ``"error"`` or ``"zero"`` (zero vector).
    """

    families: tuple[str, ...]
    max_behaviors: int = 64
    user_pool: str | None = None
    item_upper: bool = True
    adapter: bool = True
    behavior_positions: bool = True
    family_embeddings: bool = True
    id_features: tuple[str, ...] = ()
    id_buckets: int = 1 << 16
    id_dim: int = 16
    head_hidden: tuple[int, ...] = (128, 64)
    interactions: bool = True
    head_norm: str = "batch"
    dropout: float = 0.0
    missing: str = "error"

    def __post_init__(self) -> None:
        if not self.families or len(set(self.families)) != len(self.families):
            raise ValueError(f"families must be distinct and non-empty, got {self.families!r}")
        if self.max_behaviors < 1:
            raise ValueError(f"max_behaviors must be >= 1, got {self.max_behaviors}")
        if self.user_pool is not None and self.user_pool not in USER_POOLS:
            raise ValueError(
                f"user_pool must be one of {USER_POOLS} or None, got {self.user_pool!r}"
            )
        if self.id_buckets < 1 or self.id_dim < 1:
            raise ValueError("id_buckets and id_dim must be >= 1")
        if any(h < 1 for h in self.head_hidden):
            raise ValueError(f"head_hidden widths must be >= 1, got {self.head_hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.missing not in ("error", "zero"):
            raise ValueError(f"missing must be 'error' or 'zero', got {self.missing!r}")
        if self.head_norm not in ("batch", "none"):
            raise ValueError(f"head_norm must be 'batch' or 'none', got {self.head_norm!r}")


class IdEmbeddings(nn.Module):
    """Hashed ID features (``key mod buckets``) -> concatenated embeddings."""

    def __init__(self, names: Sequence[str], buckets: int, dim: int) -> None:
        super().__init__()
        self.names = tuple(names)
        self.buckets = buckets
        self.tables = nn.ModuleDict({n: nn.Embedding(buckets, dim) for n in self.names})
        self.out_dim = dim * len(self.names)

    def featurize(self, data: CTRData, idx: np.ndarray) -> dict[str, torch.Tensor]:
        out = {}
        for n in self.names:
            if n not in data.ids:
                raise KeyError(f"id feature {n!r} is not in the data (has {sorted(data.ids)})")
            out[f"id:{n}"] = torch.from_numpy(np.mod(data.ids[n][idx], self.buckets))
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.names:
            return None
        return torch.cat([self.tables[n](batch[f"id:{n}"]) for n in self.names], dim=-1)


class CTRHead(nn.Module):
    """MLP from the joined features to one logit."""

    def __init__(
        self, in_dim: int, hidden: Sequence[int], dropout: float = 0.0, norm: str = "batch"
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(in_dim)] if norm == "batch" else []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, 1))
        self.mlp = nn.Sequential(*layers)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(-1)


def head_input_dim(d: int, n_families: int, id_dim: int, interactions: bool) -> int:
    return d * n_families * (2 if interactions else 1) + d + id_dim


def join_features(
    user: torch.Tensor, item: torch.Tensor, ids: torch.Tensor | None, interactions: bool
) -> torch.Tensor:
    """``[user (B, F*d), item (B, d), (user_f * item)_f, ids]``: the head's input."""
    parts = [user, item]
    if interactions:
        B, d = item.shape
        parts.append((user.reshape(B, -1, d) * item[:, None, :]).reshape(B, -1))
    if ids is not None:
        parts.append(ids)
    return torch.cat(parts, dim=-1)


def _pool_seq(h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    return pool(h, mask, "cls" if how == "first" else how)


class BAHECTR(nn.Module):
    """BAHE: upper layers over stored behaviour vectors + CTR head.

    ``lm`` supplies the trainable upper layers; ``store`` must have been built by ``lm``'s lower
    layers (checked: a mismatch raises :class:`~bahe.store.StoreMismatchError`).
    """

    kind = "bahe"

    def __init__(self, lm: SplitLM, store: BehaviorStore, config: BAHEConfig) -> None:
        super().__init__()
        store.check(lm.identity())
        self.lm = lm
        object.__setattr__(self, "store", store)
        self.config = config
        d = lm.hidden_size
        self.d = d
        self.user_pool = config.user_pool or ("last" if lm.causal else "mean")
        self.adapter = nn.LayerNorm(d) if config.adapter else nn.Identity()
        self.pos = nn.Embedding(config.max_behaviors, d) if config.behavior_positions else None
        nf = len(config.families) + 1  # + the item "family"
        self.fam = nn.Embedding(nf, d) if config.family_embeddings else None
        for emb in (self.pos, self.fam):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        self.ids = IdEmbeddings(config.id_features, config.id_buckets, config.id_dim)
        self.head = CTRHead(
            head_input_dim(d, len(config.families), self.ids.out_dim, config.interactions),
            config.head_hidden,
            config.dropout,
            config.head_norm,
        )
        st = store.manifest.get("stats", {})
        mean = st.get("vector_mean")
        self.register_buffer(
            "center",
            torch.tensor(mean, dtype=torch.float32) if mean and len(mean) == d else torch.zeros(d),
        )

    # ------------------------------------------------------------------ data -> tensors

    def featurize(self, data: CTRData, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Store rows of the batch's behaviours and items (vectors are gathered in forward)."""
        cfg = self.config
        missing = [f for f in cfg.families if f not in data.behaviors]
        if missing:
            raise KeyError(f"families {missing} are not in the data (has {list(data.families)})")
        M = cfg.max_behaviors
        rows = np.full((len(idx), len(cfg.families), M), -1, np.int64)
        for j, f in enumerate(cfg.families):
            b = data.behaviors[f][idx]
            ln = np.minimum(data.lengths[f][idx], M)
            if b.shape[1] > M:  # keep the most recent M (right-aligned in the source)
                full_len = data.lengths[f][idx]
                start = np.maximum(full_len - M, 0)
                b = np.stack([np.roll(r, -s)[:M] for r, s in zip(b, start, strict=True)])
            r = self.store.rows(b[:, :M] if b.shape[1] >= M else b)
            valid = np.arange(r.shape[1])[None, :] < ln[:, None]
            if cfg.missing == "error" and ((r < 0) & valid).any():
                n = int(((r < 0) & valid).sum())
                raise KeyError(
                    f"{n} behaviour(s) of family {f!r} are not in the behaviour store at "
                    f"{self.store.root}; refresh it (python -m bahe build-store --refresh) or use "
                    "missing='zero'"
                )
            rows[:, j, : r.shape[1]] = np.where(valid, r, -1)
        item = self.store.rows(data.item_keys[idx])
        if cfg.missing == "error" and (item < 0).any():
            raise KeyError(
                f"{int((item < 0).sum())} item title(s) are not in the behaviour store at "
                f"{self.store.root}; refresh it with the new titles"
            )
        lengths = np.stack(
            [np.minimum(data.lengths[f][idx], M) for f in cfg.families], axis=1
        ).astype(np.int64)
        out = {
            "rows": torch.from_numpy(rows),
            "lengths": torch.from_numpy(lengths),
            "item_rows": torch.from_numpy(item),
            "labels": torch.from_numpy(data.labels[idx]),
        }
        out.update(self.ids.featurize(data, idx))
        return out

    # ------------------------------------------------------------------ forward

    def _inputs(self, vec: torch.Tensor, family: int, positions: bool) -> torch.Tensor:
        x = self.adapter(vec - self.center) if self.config.adapter else vec
        if self.pos is not None and positions:
            x = x + self.pos.weight[: x.shape[-2]]
        if self.fam is not None:
            x = x + self.fam.weight[family]
        return x

    def user_embedding(self, vecs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``vecs [B, F, M, d]`` (stored vectors), ``lengths [B, F]`` -> ``[B, F*d]``."""
        B, F, M, d = vecs.shape
        x = torch.stack([self._inputs(vecs[:, j], j, True) for j in range(F)], dim=1)
        mask = torch.arange(M, device=vecs.device)[None, None, :] < lengths[..., None]
        # a family with no behaviour keeps one position (its type + position embedding), so no
        # sequence is fully masked
        empty = lengths == 0
        if bool(empty.any()):
            mask = mask.clone()
            mask[..., 0] |= empty
        h = self.lm.upper_hidden(x.reshape(B * F, M, d), mask.reshape(B * F, M).long())
        u = _pool_seq(h, mask.reshape(B * F, M), self.user_pool)
        return u.reshape(B, F * d)

    def item_embedding(self, item_vec: torch.Tensor) -> torch.Tensor:
        x = self._inputs(item_vec, len(self.config.families), False)
        if not self.config.item_upper:
            return x
        ones = torch.ones(x.shape[0], 1, dtype=torch.long, device=x.device)
        return self.lm.upper_hidden(x[:, None, :], ones)[:, 0]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        dev = self.head.device
        vecs = self.store.gather(batch["rows"].numpy(), device=dev)
        item = self.store.gather(batch["item_rows"].numpy(), device=dev)
        lengths = batch["lengths"].to(dev)
        user = self.user_embedding(vecs, lengths)
        ide = self.ids({k: v.to(dev) for k, v in batch.items() if k.startswith("id:")})
        x = join_features(user, self.item_embedding(item), ide, self.config.interactions)
        return self.head(x)

    def trainable_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.state_dict().items()}
