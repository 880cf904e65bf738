"""From canonical tables to per-user chronological sequences (§4.1.1 and the official
``preprocess_amazon.py``, re-implemented with the bugs listed in the README fixed).

Steps of :func:`prepare`:

1. clean titles (HTML entities unescaped, tags removed, whitespace collapsed; titles of
   ``max_title_chars`` or more are blanked, as the official ``clean_text`` does);
2. items without a usable title: dropped with their interactions (the paper's rule,
   ``missing_title="drop"``), or an error, or a placeholder text (the official code's "None");
3. merge the domains; an item listed in several domains keeps the first domain given;
   interactions of items without metadata are dropped;
4. iterative k-core on the **merged** data (every user and item keeps >= k interactions);
5. integer-time sort per user (stable: equal times keep input order), consecutive duplicates
   dropped, users with fewer than 3 interactions dropped (leave-one-out needs train/valid/test);
6. items re-indexed 1..N (0 is padding), users 0..U-1.

:class:`RecData` holds the result and is saved/loaded as parquet with a content fingerprint.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared import atomic_write, atomic_write_text

from .schema import DataError, validate_interactions, validate_items

__all__ = ["PrepConfig", "RecData", "clean_title", "kcore_filter", "prepare"]

_TAG = re.compile(r"<[^>]{0,200}>")
_WS = re.compile(r"\s+")


def clean_title(text: object, *, max_chars: int = 2000) -> str | None:
    """A cleaned title, or ``None`` when nothing usable remains (missing, empty, too long)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    s = html.unescape(html.unescape(str(text)))
    s = _WS.sub(" ", _TAG.sub(" ", s)).strip()
    if not s or len(s) >= max_chars or s.lower() in ("none", "nan", "null"):
        return None
    return s


@dataclass(frozen=True)
class PrepConfig:
    """Options of :func:`prepare`.

    Args:
        kcore: minimum interactions per user and per item on the merged data (paper: 5).
        max_title_chars: titles this long or longer are treated as missing.
        missing_title: ``"drop"`` (paper), ``"error"``, or ``"placeholder"`` (official code).
        placeholder: the text used with ``missing_title="placeholder"``.
        dedup_consecutive: drop an interaction repeating the user's previous item.
    """

    kcore: int = 5
    max_title_chars: int = 2000
    missing_title: str = "drop"
    placeholder: str = "None"
    dedup_consecutive: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.kcore, int) or self.kcore < 1:
            raise ValueError(f"kcore must be an integer >= 1, got {self.kcore!r}")
        if self.max_title_chars < 1:
            raise ValueError(f"max_title_chars must be >= 1, got {self.max_title_chars}")
        if self.missing_title not in ("drop", "error", "placeholder"):
            raise ValueError(
                f"missing_title must be 'drop', 'error' or 'placeholder', got {self.missing_title!r}"
            )


def kcore_filter(inter: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than ``k`` interactions until none remain."""
    df = inter
    while True:
        uc = df["user"].map(df["user"].value_counts())
        ic = df["item"].map(df["item"].value_counts())
        keep = (uc >= k) & (ic >= k)
        if keep.all():
            return df.reset_index(drop=True)
        df = df[keep]


@dataclass
class RecData:
    """Prepared multi-domain data: items 1..N with titles and domains, one sequence per user.

    ``seqs[u]`` holds item indices in time order. Leave-one-out: ``seqs[u][-1]`` is the test
    target, ``seqs[u][-2]`` the validation target, the rest is training data.
    """

    item_ids: list[str]  # index i-1 -> original id of item i
    titles: list[str]
    item_domain: np.ndarray  # [N+1] domain index of each item, -1 for padding 0
    domains: list[str]
    users: list[str]
    seqs: list[np.ndarray]
    stats: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.users)

    def title(self, item: int) -> str:
        if not 1 <= item <= self.n_items:
            raise IndexError(f"item index {item} outside 1..{self.n_items}")
        return self.titles[item - 1]

    def domain_items(self) -> list[np.ndarray]:
        """Sorted item indices of every domain."""
        return [np.flatnonzero(self.item_domain == d) for d in range(len(self.domains))]

    def domain_index(self, name: str) -> int:
        try:
            return self.domains.index(name)
        except ValueError:
            raise DataError(f"unknown domain {name!r}; known: {self.domains}") from None

    def item_index(self, item_id: str) -> int:
        idx = getattr(self, "_item_lookup", None)
        if idx is None:
            idx = {s: i + 1 for i, s in enumerate(self.item_ids)}
            self._item_lookup = idx
        try:
            return idx[str(item_id)]
        except KeyError:
            raise DataError(
                f"unknown item id {item_id!r} (not in the prepared catalogue)"
            ) from None

    def train_counts(self) -> np.ndarray:
        """How often each item occurs in the training part (everything but valid/test)."""
        c = np.zeros(self.n_items + 1, dtype=np.int64)
        for s in self.seqs:
            np.add.at(c, s[:-2], 1)
        return c

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.item_ids, self.titles, self.domains]).encode())
        h.update(self.item_domain.astype(np.int64).tobytes())
        for u, s in zip(self.users, self.seqs, strict=True):
            h.update(u.encode() + b"\0" + np.asarray(s, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``items.parquet``, ``sequences.parquet`` and ``meta.json`` atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        items = pa.table(
            {
                "index": np.arange(1, self.n_items + 1, dtype=np.int64),
                "item": self.item_ids,
                "domain": [self.domains[x] for x in self.item_domain[1:]],
                "title": self.titles,
            }
        )
        seqs = pa.table(
            {"user": self.users, "items": [np.asarray(s, dtype=np.int64) for s in self.seqs]}
        )
        for name, table in (("items.parquet", items), ("sequences.parquet", seqs)):
            with atomic_write(d / name) as f:
                pq.write_table(table, f)
        meta = {
            "format": "llmrec.RecData/1",
            "domains": self.domains,
            "fingerprint": self.fingerprint(),
            "stats": self.stats,
        }
        atomic_write_text(d / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> RecData:
        d = Path(directory)
        for name in ("items.parquet", "sequences.parquet", "meta.json"):
            if not (d / name).exists():
                raise DataError(f"{d} is not a prepared data set: {name} is missing (run prepare)")
        try:
            meta = json.loads((d / "meta.json").read_text())
            items = pq.read_table(d / "items.parquet").to_pandas()
            seqs = pq.read_table(d / "sequences.parquet").to_pandas()
            domains = list(meta["domains"])
            dmap = {x: i for i, x in enumerate(domains)}
            if list(items["index"]) != list(range(1, len(items) + 1)):
                raise DataError(f"{d}/items.parquet: indices are not 1..N")
            item_domain = np.concatenate([[-1], items["domain"].map(dmap).to_numpy()])
            out = cls(
                item_ids=[str(x) for x in items["item"]],
                titles=[str(x) for x in items["title"]],
                item_domain=item_domain.astype(np.int64),
                domains=domains,
                users=[str(x) for x in seqs["user"]],
                seqs=[np.asarray(s, dtype=np.int64) for s in seqs["items"]],
                stats=meta.get("stats", {}),
            )
            fp = out.fingerprint()
        except DataError:
            raise
        except Exception as e:  # pyarrow/pandas raise several types on corrupt bytes
            raise DataError(f"{d}: corrupt prepared data ({type(e).__name__}: {e})") from None
        if fp != meta.get("fingerprint"):
            raise DataError(f"{d}: content does not match the fingerprint in meta.json (corrupt?)")
        return out


def prepare(
    sources: Sequence[tuple[pd.DataFrame, pd.DataFrame]],
    config: PrepConfig | None = None,
) -> RecData:
    """Merge ``(interactions, items)`` pairs (one per domain or one for all) into :class:`RecData`."""
    cfg = config or PrepConfig()
    if not sources:
        raise DataError("prepare needs at least one (interactions, items) pair")
    inters = [validate_interactions(i) for i, _ in sources]
    metas = [validate_items(m) for _, m in sources]
    inter = pd.concat(inters, ignore_index=True)
    items = pd.concat(metas, ignore_index=True)
    stats: dict = {"raw_interactions": len(inter), "raw_items": int(items["item"].nunique())}
    multi = items.duplicated("item", keep=False)
    stats["items_in_several_domains"] = int(items.loc[multi, "item"].nunique())
    items = items.drop_duplicates("item", keep="first")
    items["title"] = [clean_title(t, max_chars=cfg.max_title_chars) for t in items["title"]]
    missing = items["title"].isna()
    stats["items_missing_title"] = int(missing.sum())
    if missing.any():
        if cfg.missing_title == "error":
            ex = list(items.loc[missing, "item"].head(5))
            raise DataError(
                f"{int(missing.sum())} item(s) have no usable title (e.g. {ex}); use "
                f"missing_title='drop' or 'placeholder'"
            )
        if cfg.missing_title == "drop":
            items = items[~missing]
        else:
            items.loc[missing, "title"] = cfg.placeholder
    # an interaction's domain is its item's domain (items listed first win)
    before = len(inter)
    inter = inter.drop(columns="domain").merge(items[["item", "domain"]], on="item", how="inner")
    stats["dropped_no_meta_or_title"] = before - len(inter)
    # stable time order per user; consecutive duplicates dropped
    inter = inter.reset_index(names="_order")
    inter = inter.sort_values(["user", "ts", "_order"], kind="stable")
    if cfg.dedup_consecutive:
        prev_user = inter["user"].shift()
        prev_item = inter["item"].shift()
        dup = (inter["user"] == prev_user) & (inter["item"] == prev_item)
        stats["consecutive_duplicates"] = int(dup.sum())
        inter = inter[~dup]
    while True:  # k-core, then drop users too short for leave-one-out, until both hold
        inter = kcore_filter(inter, cfg.kcore)
        counts = inter["user"].value_counts()
        short = counts[counts < 3].index
        if not len(short):
            break
        inter = inter[~inter["user"].isin(short)]
    if inter.empty:
        raise DataError(
            f"no interactions left after the {cfg.kcore}-core filter and leave-one-out minimum; "
            f"lower kcore or provide more data"
        )
    inter = inter.sort_values(["user", "ts", "_order"], kind="stable")
    domains = sorted(inter["domain"].unique())
    dmap = {x: i for i, x in enumerate(domains)}
    kept_items = items[items["item"].isin(inter["item"])].sort_values(["domain", "item"])
    item_ids = list(kept_items["item"])
    imap = {x: i + 1 for i, x in enumerate(item_ids)}
    item_domain = np.concatenate([[-1], kept_items["domain"].map(dmap).to_numpy()]).astype(np.int64)
    inter["idx"] = inter["item"].map(imap)
    users, seqs = [], []
    for u, g in inter.groupby("user", sort=True):
        users.append(str(u))
        seqs.append(g["idx"].to_numpy(dtype=np.int64))
    stats.update(
        {
            "users": len(users),
            "items": len(item_ids),
            "interactions": int(sum(len(s) for s in seqs)),
            "kcore": cfg.kcore,
            "config": asdict(cfg),
        }
    )
    return RecData(
        item_ids=item_ids,
        titles=list(kept_items["title"]),
        item_domain=item_domain,
        domains=domains,
        users=users,
        seqs=seqs,
        stats=stats,
    )
