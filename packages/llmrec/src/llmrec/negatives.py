"""Negative sampling for training (Eq. 6) and for sampled evaluation (§4.1.3).

Both draw from the **target item's domain** and never return the positive. The official code
samples evaluation negatives with ``random.sample(domain_items, 1000)``, which can return the
positive itself (probability ~1000/|V_d|); :func:`sample_eval_negatives` reproduces that only when
asked (``allow_positive=True``) so the effect can be measured.

Evaluation negatives are fixed per user by a seed and persisted (:func:`save_negatives`) with the
data fingerprint, so every model of a comparison ranks the same candidates (RecBole issue #2077).
Rule for a domain with fewer than ``n + 1`` items: all its other items are the negatives and the
row is padded with 0 (masked out by the metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared import atomic_write

from .preprocess import RecData
from .schema import DataError

__all__ = [
    "load_negatives",
    "sample_eval_negatives",
    "sample_train_negatives",
    "save_negatives",
]


def _positions(domain_items: list[np.ndarray], item_domain: np.ndarray, targets: np.ndarray):
    doms = item_domain[targets]
    pos = np.empty(len(targets), dtype=np.int64)
    for d in np.unique(doms):
        m = doms == d
        pos[m] = np.searchsorted(domain_items[d], targets[m])
    return doms, pos


def sample_train_negatives(
    rng: np.random.Generator,
    targets: np.ndarray,
    item_domain: np.ndarray,
    domain_items: list[np.ndarray],
    n: int,
) -> np.ndarray:
    """``[len(targets), n]`` negatives, each row from its target's domain, never the target,
    without repeats inside a row (as ``random.sample``). Rule for a domain with ``n`` items or
    fewer: its other items are drawn with replacement. A one-item domain is an error."""
    targets = np.asarray(targets, dtype=np.int64)
    doms, pos = _positions(domain_items, item_domain, targets)
    sizes = np.array([len(domain_items[d]) for d in doms], dtype=np.int64)
    if len(targets) and (sizes < 2).any():
        d = int(doms[np.argmin(sizes)])
        raise ValueError(f"cannot draw training negatives from domain {d}: it has one item")
    out = np.empty((len(targets), n), dtype=np.int64)
    for d in np.unique(doms):
        m = np.flatnonzero(doms == d)
        items = domain_items[d]
        k = len(items) - 1
        draw = rng.integers(0, k, size=(len(m), n))
        # resample rows with a repeated draw (rare when n << k)
        while 1 < n <= k:
            srt = np.sort(draw, axis=1)
            bad = (srt[:, 1:] == srt[:, :-1]).any(1)
            if not bad.any():
                break
            draw[bad] = rng.integers(0, k, size=(int(bad.sum()), n))
        draw = draw + (draw >= pos[m][:, None])  # skip the target's slot
        out[m] = items[draw]
    return out


def sample_eval_negatives(
    data: RecData,
    users: np.ndarray,
    targets: np.ndarray,
    n: int = 1000,
    *,
    seed: int = 42,
    allow_positive: bool = False,
) -> np.ndarray:
    """``[len(targets), n]`` fixed evaluation negatives from each target's domain.

    The stream of user ``u`` is seeded by ``(seed, u)``, so a user's negatives do not depend on
    which other users are evaluated. ``allow_positive=True`` reproduces the official protocol
    (sample ``n`` from the whole domain, the positive included when drawn).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    targets = np.asarray(targets, dtype=np.int64)
    dom_items = data.domain_items()
    out = np.zeros((len(targets), n), dtype=np.int64)
    for i, (u, t) in enumerate(zip(np.asarray(users), targets, strict=True)):
        items = dom_items[data.item_domain[t]]
        pool = items if allow_positive else items[items != t]
        rng = np.random.default_rng([seed, int(u)])
        k = min(n, len(pool))
        out[i, :k] = pool[rng.choice(len(pool), size=k, replace=False)]
    return out


def save_negatives(
    path: str | Path,
    data: RecData,
    users: np.ndarray,
    targets: np.ndarray,
    negatives: np.ndarray,
    *,
    meta: dict | None = None,
) -> Path:
    """Persist negatives as parquet (user id, target id, negative indices) with the data
    fingerprint in the file metadata; written atomically."""
    table = pa.table(
        {
            "user": [data.users[u] for u in users],
            "target": np.asarray(targets, dtype=np.int64),
            "negatives": list(np.asarray(negatives, dtype=np.int64)),
        }
    )
    md = {"fingerprint": data.fingerprint(), **(meta or {})}
    table = table.replace_schema_metadata({"llmrec": json.dumps(md)})
    with atomic_write(path) as f:
        pq.write_table(table, f)
    return Path(path)


def load_negatives(path: str | Path, data: RecData, users: np.ndarray, targets: np.ndarray):
    """Load negatives saved by :func:`save_negatives`, checked against ``data`` and the examples."""
    p = Path(path)
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{p}: not a readable negatives file ({e})") from None
    md = json.loads((table.schema.metadata or {}).get(b"llmrec", b"{}"))
    if md.get("fingerprint") != data.fingerprint():
        raise DataError(f"{p}: negatives were sampled for different data (fingerprint mismatch)")
    df = table.to_pandas()
    want_users = [data.users[u] for u in users]
    if list(df["user"]) != want_users or not np.array_equal(df["target"].to_numpy(), targets):
        raise DataError(f"{p}: negatives are for other users or targets than these examples")
    return np.stack([np.asarray(x, dtype=np.int64) for x in df["negatives"]])
