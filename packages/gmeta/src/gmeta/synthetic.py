"""Synthetic cold-start interaction logs with a planted per-user preference (the embedded default).

Public recommendation data cannot be downloaded here, so the cold-start claim runs on data whose
generative model we know. Each user ``u`` likes ``liked`` of ``categories`` item categories; a
click on item ``j`` (category ``c_j``) in context slot ``x`` happens with probability

    p = sigmoid(bias + q_j + pref * (+1 if c_j liked by u else -r) + ctx_x + w . dense)

where ``q_j`` is an item quality, ``ctx_x`` a small context effect and ``dense`` four features
(item popularity, two noise features, a time-of-day phase). ``r = liked / (categories - liked)``
makes the user term average to zero over categories, so a global (non-meta) model cannot learn
it; it can only be learned per user, from that user's few support interactions. That is what
MAML's fast adaptation buys on cold-start users, and what the quality claim measures.

The log is flat and time-ordered across users (interleaved, as a production log is), with
columns ``user_id, item_id, category, ctx, scene, ts, label, dense_0..dense_3``. Users are split
into meta-train and cold-start users (disjoint) by :attr:`ColdStartData.cold_users`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["ColdStartData", "SyntheticConfig", "generate_log", "synthetic_fields"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and signal of the synthetic log (validated on construction)."""

    n_users: int = 2000
    n_items: int = 200
    categories: int = 8
    liked: int = 2
    contexts: int = 6
    scenes: int = 2
    interactions_per_user: tuple[int, int] = (24, 40)
    pref: float = 3.0
    quality_std: float = 0.5
    cold_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "categories", "liked", "contexts", "scenes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"SyntheticConfig.{name} must be a positive int, got {v!r}")
        if self.liked >= self.categories:
            raise ValueError(
                f"SyntheticConfig.liked ({self.liked}) must be < categories ({self.categories})"
            )
        lo, hi = self.interactions_per_user
        if not (1 <= lo <= hi):
            raise ValueError(
                f"SyntheticConfig.interactions_per_user must be (lo, hi) with 1 <= lo <= hi, "
                f"got {self.interactions_per_user}"
            )
        if not 0 < self.cold_fraction < 1:
            raise ValueError(
                f"SyntheticConfig.cold_fraction must be in (0, 1), got {self.cold_fraction}"
            )
        if self.pref < 0 or self.quality_std < 0:
            raise ValueError("SyntheticConfig.pref and quality_std must be >= 0")


@dataclass(frozen=True)
class ColdStartData:
    """The log, the planted truth (click probability per row) and the cold-start user ids."""

    log: pa.Table
    prob: np.ndarray
    cold_users: np.ndarray
    config: SyntheticConfig

    @property
    def warm_users(self) -> np.ndarray:
        users = np.arange(self.config.n_users)
        return users[~np.isin(users, self.cold_users)]


def synthetic_fields(cfg: SyntheticConfig) -> list[tuple[str, int]]:
    """The sparse fields of the synthetic log and their cardinalities (column, size)."""
    return [("item_id", cfg.n_items), ("category", cfg.categories), ("ctx", cfg.contexts)]


DENSE_COLUMNS = ("dense_0", "dense_1", "dense_2", "dense_3")


def generate_log(cfg: SyntheticConfig | None = None) -> ColdStartData:
    """Generate the log (deterministic in ``cfg.seed``)."""
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    item_cat = rng.integers(0, cfg.categories, cfg.n_items)
    quality = rng.normal(0.0, cfg.quality_std, cfg.n_items)
    popularity = rng.random(cfg.n_items)
    ctx_effect = rng.normal(0.0, 0.3, cfg.contexts)
    liked = np.zeros((cfg.n_users, cfg.categories), dtype=bool)
    for u in range(cfg.n_users):
        liked[u, rng.choice(cfg.categories, cfg.liked, replace=False)] = True
    dislike = cfg.liked / (cfg.categories - cfg.liked)
    lo, hi = cfg.interactions_per_user
    counts = rng.integers(lo, hi + 1, cfg.n_users)
    users = np.repeat(np.arange(cfg.n_users), counts)
    n = len(users)
    items = rng.integers(0, cfg.n_items, n)
    ctx = rng.integers(0, cfg.contexts, n)
    scene = rng.integers(0, cfg.scenes, n).astype(np.int8)
    ts = rng.integers(1_700_000_000, 1_700_000_000 + 30 * 86400, n)
    noise = rng.normal(0.0, 1.0, (n, 2))
    phase = np.sin(2 * np.pi * (ts % 86400) / 86400.0)
    dense = np.stack([popularity[items], noise[:, 0], noise[:, 1], phase], 1).astype(np.float32)
    cat = item_cat[items]
    user_term = np.where(liked[users, cat], cfg.pref, -cfg.pref * dislike)
    logit = -0.2 + quality[items] + user_term + ctx_effect[ctx] + 0.5 * dense[:, 0] - 0.25
    prob = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(n) < prob).astype(np.int8)
    order = np.lexsort((users, ts))  # time-ordered, users interleaved (a production log)
    cols = {
        "user_id": users[order].astype(np.int64),
        "item_id": items[order].astype(np.int64),
        "category": cat[order].astype(np.int64),
        "ctx": ctx[order].astype(np.int64),
        "scene": scene[order],
        "ts": ts[order].astype(np.int64),
        "label": label[order],
    }
    for i, c in enumerate(DENSE_COLUMNS):
        cols[c] = dense[order, i]
    n_cold = max(1, round(cfg.n_users * cfg.cold_fraction))
    cold = np.sort(rng.choice(cfg.n_users, n_cold, replace=False))
    return ColdStartData(pa.table(cols), prob[order], cold, cfg)
