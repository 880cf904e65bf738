"""CTR data with long textual user behaviours: the in-memory form, a synthetic planted-topic
generator (the embedded default), AntM2C-format input and a simple format of our own.

Every data set becomes a :class:`CTRData`: per behaviour *family* (bills, searches, visits, ...)
an ``int64 [n, M]`` matrix of behaviour keys (most recent last, right-padded, with its lengths),
the item-title key, the label, hashed ID features, and one :class:`~bahe.text.BehaviorCatalog`
holding the text of every unique behaviour and title (what the store encodes).

Formats read:

* **AntM2C** (the public ``antm2c_10m_part*`` CSV layout, which the ``antm2c`` package's generator
  also writes): a header row; the user text columns ``bill_entity_seq``, ``service_entity_seq``,
  ``query_entity_seq`` are the behaviour families (entities separated by ``entity_sep``, default
  ``,``: unconfirmed for the real release); ``item_title`` is the item text; ``log_time`` decides
  the split (half-open intervals at the community cutoffs 2023-08-03 / 2023-08-05; unparseable
  times raise, never coerced).
* **Simple format** (ours): a parquet or JSON-lines file with ``label`` (0/1), ``item_title``
  (string), optional ``user_id``/``item_id``, and one ``list<string>`` column per family.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .text import BehaviorCatalog, Normalization, behavior_key

__all__ = [
    "ANTM2C_FAMILIES",
    "CTRData",
    "DataError",
    "SyntheticConfig",
    "make_synthetic",
    "read_antm2c",
    "read_simple",
    "write_simple",
]

ANTM2C_FAMILIES = ("bill_entity_seq", "service_entity_seq", "query_entity_seq")
ANTM2C_NEEDED = ("user_id", "item_id", "log_time", "label", *ANTM2C_FAMILIES, "item_title", "scene")
COMMUNITY_CUTOFFS = ("2023-08-03 00:00:00", "2023-08-05 00:00:00")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M")


class DataError(ValueError):
    """Input data is malformed; the message names the file, column or row."""


@dataclass
class CTRData:
    """Click rows with behaviour sequences as keys into one catalogue."""

    families: tuple[str, ...]
    behaviors: dict[str, np.ndarray]  # family -> int64 [n, M] keys, right-padded with 0
    lengths: dict[str, np.ndarray]  # family -> int32 [n]
    item_keys: np.ndarray  # int64 [n]: key of the item title in the catalogue
    labels: np.ndarray  # float32 [n]
    catalog: BehaviorCatalog
    ids: dict[str, np.ndarray] = field(default_factory=dict)  # name -> int64 keys [n]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        for f in self.families:
            if self.behaviors[f].shape[0] != n or self.lengths[f].shape != (n,):
                raise DataError(f"family {f!r} has a row count different from the labels ({n})")
        if self.item_keys.shape != (n,):
            raise DataError("item_keys must have one entry per row")
        for k, v in self.ids.items():
            if v.shape != (n,):
                raise DataError(f"id feature {k!r} must have one entry per row")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def max_behaviors(self) -> int:
        return max((self.behaviors[f].shape[1] for f in self.families), default=0)

    def subset(self, idx: np.ndarray) -> CTRData:
        idx = np.asarray(idx)
        return CTRData(
            self.families,
            {f: self.behaviors[f][idx] for f in self.families},
            {f: self.lengths[f][idx] for f in self.families},
            self.item_keys[idx],
            self.labels[idx],
            self.catalog,
            {k: v[idx] for k, v in self.ids.items()},
            dict(self.meta),
        )

    def behavior_keys(self) -> np.ndarray:
        """Every distinct key the rows use (behaviours and item titles), sorted."""
        parts = [self.item_keys]
        for f in self.families:
            b, ln = self.behaviors[f], self.lengths[f]
            valid = np.arange(b.shape[1])[None, :] < ln[:, None]
            parts.append(b[valid])
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def texts(self) -> list[str]:
        """Normalised text of every distinct behaviour/title the rows use."""
        return [self.catalog.text(k) for k in self.behavior_keys()]

    def stats(self) -> dict[str, Any]:
        occ = int(sum(int(self.lengths[f].sum()) for f in self.families))
        uniq = (
            len(
                np.unique(
                    np.concatenate(
                        [
                            self.behaviors[f][
                                np.arange(self.behaviors[f].shape[1])[None]
                                < self.lengths[f][:, None]
                            ]
                            for f in self.families
                        ]
                    )
                )
            )
            if self.families
            else 0
        )
        return {
            "rows": len(self),
            "families": list(self.families),
            "positive_rate": float(self.labels.mean()) if len(self) else float("nan"),
            "behavior_occurrences": occ,
            "unique_behaviors": uniq,
            "dedup_ratio": occ / max(1, uniq),
            "mean_behaviors_per_family": {f: float(self.lengths[f].mean()) for f in self.families},
        }

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_table(
        cls,
        table: pa.Table,
        families: Sequence[str],
        *,
        max_behaviors: int = 64,
        item_text: str = "item_title",
        label: str = "label",
        id_features: Sequence[str] = (),
        sep: str | None = None,
        catalog: BehaviorCatalog | None = None,
        normalization: Normalization | None = None,
        source: str = "table",
    ) -> CTRData:
        """Build from an Arrow table whose family columns are ``list<string>`` or, with ``sep``,
        strings of separated behaviours. Keeps the last ``max_behaviors`` of each family."""
        if max_behaviors < 1:
            raise DataError(f"max_behaviors must be >= 1, got {max_behaviors}")
        families = tuple(families)
        if not families:
            raise DataError("at least one behaviour family is needed")
        need = [*families, item_text, label, *id_features]
        missing = [c for c in need if c not in table.column_names]
        if missing:
            raise DataError(
                f"{source}: missing columns {missing} (has {table.column_names}); families "
                f"{list(families)}, item text {item_text!r}, label {label!r}"
            )
        cat = catalog or BehaviorCatalog(normalization or Normalization())
        n = table.num_rows
        lab = table.column(label)
        if lab.null_count:
            raise DataError(f"{source}: column {label!r} has {lab.null_count} nulls")
        y = np.asarray(lab.to_numpy(zero_copy_only=False), dtype=np.float64)
        if n and not np.isin(y, (0.0, 1.0)).all():
            bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))[0]
            raise DataError(f"{source}: label must be 0 or 1; row {bad} has {y[bad]!r}")
        behaviors, lengths = {}, {}
        for f in families:
            behaviors[f], lengths[f] = _family_matrix(
                table.column(f), cat, max_behaviors, sep, f, source
            )
        titles = table.column(item_text)
        if titles.null_count:
            raise DataError(f"{source}: column {item_text!r} has {titles.null_count} nulls")
        item_keys = _string_keys(titles, cat, item_text, source)
        ids = {}
        for name in id_features:
            col = table.column(name).cast(pa.string())
            ids[name] = np.fromiter(
                (behavior_key(s or "") for s in col.to_pylist()), dtype=np.int64, count=n
            )
        return cls(families, behaviors, lengths, item_keys, y.astype(np.float32), cat, ids)


def _string_keys(col: pa.ChunkedArray, cat: BehaviorCatalog, name: str, source: str) -> np.ndarray:
    enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    uniq = enc.dictionary.to_pylist()
    keys = np.empty(len(uniq), np.int64)
    for i, s in enumerate(uniq):
        if not s or not s.strip():
            raise DataError(f"{source}: column {name!r} holds an empty string")
        keys[i] = cat.add(s)
    idx = enc.indices.to_numpy(zero_copy_only=False)
    # count each row's occurrence (the catalogue counted one per unique string)
    cat.occurrences += len(idx) - len(uniq)
    return keys[idx]


def _family_matrix(col, cat, max_b, sep, name, source):
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        if sep is None:
            raise DataError(
                f"{source}: family column {name!r} is a string; give its separator (sep=...) or "
                "store it as list<string>"
            )
        enc = pc.dictionary_encode(col.fill_null(""))
        uniq = enc.dictionary.to_pylist()
        rows_u = []
        for s in uniq:
            parts = [p for p in (x.strip() for x in s.split(sep)) if p]
            rows_u.append(parts)
        idx = enc.indices.to_numpy(zero_copy_only=False)
        mat_u, len_u = _pad_keys(rows_u, cat, max_b)
        counts = np.bincount(idx, minlength=len(uniq))
        # occurrences: each row uses its behaviours once (the catalogue counted each unique row once)
        cat.occurrences += int(((counts - 1) * len_u).sum())
        return mat_u[idx], len_u[idx]
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        rows = col.to_pylist()
        clean = []
        for i, r in enumerate(rows):
            r = r or []
            if any(not isinstance(x, str) for x in r):
                raise DataError(
                    f"{source}: row {i} of family {name!r} holds a non-string behaviour"
                )
            clean.append([x for x in r if x.strip()])
        return _pad_keys(clean, cat, max_b)
    raise DataError(
        f"{source}: family column {name!r} has type {col.type}; need list<string> or string"
    )


def _pad_keys(
    rows: list[list[str]], cat: BehaviorCatalog, max_b: int
) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, min(max_b, max((len(r) for r in rows), default=0)))
    mat = np.zeros((len(rows), width), np.int64)
    ln = np.zeros(len(rows), np.int32)
    for i, r in enumerate(rows):
        r = r[-max_b:]
        if r:
            mat[i, : len(r)] = [cat.add(x) for x in r]
        ln[i] = len(r)
    return mat, ln


# ---------------------------------------------------------------------------- AntM2C


def _antm2c_parts(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path} does not exist")
    parts = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.name.startswith(("antm2c_10m_part", "antm2c_synth_part"))
    )
    if not parts:
        raise DataError(
            f"{path} holds no AntM2C parts (antm2c_10m_part* or antm2c_synth_part* CSV files)"
        )
    return parts


def _parse_times(col: pa.Array, source: str) -> np.ndarray:
    out = np.full(len(col), np.datetime64("NaT"), dtype="datetime64[s]")
    todo = np.ones(len(col), bool)
    for fmt in _TIME_FORMATS:
        if not todo.any():
            break
        sub = col.filter(pa.array(todo))
        parsed = pc.strptime(sub, format=fmt, unit="s", error_is_null=True)
        vals = parsed.to_numpy(zero_copy_only=False).astype("datetime64[s]")
        ok = ~np.isnat(vals)
        where = np.flatnonzero(todo)
        out[where[ok]] = vals[ok]
        todo[where[ok]] = False
    if todo.any():
        i = int(np.flatnonzero(todo)[0])
        raise DataError(
            f"{source}: {int(todo.sum())} row(s) have an unparseable log_time, first at data row "
            f"{i}: {col[i].as_py()!r} (accepted formats {list(_TIME_FORMATS)}); malformed times are "
            "never coerced to a default date"
        )
    return out


def read_antm2c(
    path: str | Path,
    *,
    split: str | None = None,
    cutoffs: tuple[str, str] = COMMUNITY_CUTOFFS,
    max_rows: int | None = None,
) -> pa.Table:
    """Read AntM2C raw CSV parts (a file, or a directory of ``antm2c_*_part*``) into a table of
    the columns BAHE uses, optionally keeping one time split (``"train"``: t < c1, ``"val"``:
    c1 <= t < c2, ``"test"``: t >= c2)."""
    if split not in (None, "train", "val", "test"):
        raise DataError(f"split must be None, 'train', 'val' or 'test', got {split!r}")
    c1, c2 = (np.datetime64(_dt.datetime.strptime(c, "%Y-%m-%d %H:%M:%S"), "s") for c in cutoffs)
    if not c1 < c2:
        raise DataError(f"cutoffs must increase, got {cutoffs}")
    tables = []
    rows = 0
    for part in _antm2c_parts(Path(path)):
        with open(part, encoding="utf-8", errors="replace", newline="") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
        missing = [c for c in ANTM2C_NEEDED if c not in header]
        if missing:
            raise DataError(
                f"{part}: not an AntM2C part: header lacks {missing} (first columns {header[:5]})"
            )
        types = dict.fromkeys(ANTM2C_NEEDED, pa.string())
        try:
            t = pcsv.read_csv(
                part,
                convert_options=pcsv.ConvertOptions(
                    include_columns=list(ANTM2C_NEEDED),
                    column_types=types,
                    strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as e:
            raise DataError(f"{part}: cannot parse as CSV: {e}") from e
        times = _parse_times(t.column("log_time").combine_chunks(), str(part))
        label = pc.cast(t.column("label"), pa.int8(), safe=False)
        t = t.set_column(t.column_names.index("label"), "label", label)
        t = t.set_column(t.column_names.index("log_time"), "log_time", pa.array(times))
        if split is not None:
            m = (
                times < c1
                if split == "train"
                else (times >= c2 if split == "test" else (times >= c1) & (times < c2))
            )
            t = t.filter(pa.array(m))
        tables.append(t)
        rows += t.num_rows
        if max_rows is not None and rows >= max_rows:
            break
    table = pa.concat_tables(tables)
    if max_rows is not None:
        table = table.slice(0, max_rows)
    return table


def antm2c_data(
    path: str | Path,
    *,
    split: str | None = None,
    max_behaviors: int = 64,
    entity_sep: str = ",",
    id_features: Sequence[str] = ("item_id", "scene"),
    catalog: BehaviorCatalog | None = None,
    cutoffs: tuple[str, str] = COMMUNITY_CUTOFFS,
    max_rows: int | None = None,
) -> CTRData:
    """:func:`read_antm2c` then :meth:`CTRData.from_table` with the three user text families."""
    t = read_antm2c(path, split=split, cutoffs=cutoffs, max_rows=max_rows)
    d = CTRData.from_table(
        t,
        ANTM2C_FAMILIES,
        max_behaviors=max_behaviors,
        id_features=id_features,
        sep=entity_sep,
        catalog=catalog,
        source=str(path),
    )
    d.meta.update({"format": "antm2c", "split": split, "cutoffs": list(cutoffs)})
    d.ids["_user"] = np.fromiter(
        (behavior_key(s) for s in t.column("user_id").to_pylist()), np.int64, count=t.num_rows
    )
    return d


# ---------------------------------------------------------------------------- simple format


def read_simple(
    path: str | Path,
    *,
    families: Sequence[str] | None = None,
    max_behaviors: int = 64,
    id_features: Sequence[str] = (),
    catalog: BehaviorCatalog | None = None,
) -> CTRData:
    """Read our simple format: parquet (``.parquet``) or JSON lines (``.jsonl``/``.json``) with
    ``label``, ``item_title`` and ``list<string>`` family columns (all list columns when
    ``families`` is None)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path}: not a readable parquet file ({e})") from e
    elif path.suffix in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{i}: not valid JSON ({e.msg})") from e
        if not rows:
            raise DataError(f"{path} holds no rows")
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataError(f"{path}: rows do not share one schema ({e})") from e
    else:
        raise DataError(f"{path}: unknown format {path.suffix!r}; use .parquet or .jsonl")
    if families is None:
        families = [
            f.name
            for f in table.schema
            if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
        ]
        if not families:
            raise DataError(f"{path}: no list<string> behaviour columns found")
    d = CTRData.from_table(
        table,
        families,
        max_behaviors=max_behaviors,
        id_features=id_features,
        catalog=catalog,
        source=str(path),
    )
    d.meta["format"] = "simple"
    return d


def write_simple(data: CTRData, path: str | Path) -> Path:
    """Write ``data`` in the simple format (parquet), atomically."""
    from shared import atomic_write

    cols: dict[str, Any] = {
        "label": pa.array(data.labels.astype(np.int8)),
        "item_title": pa.array([data.catalog.text(k) for k in data.item_keys]),
    }
    for f in data.families:
        b, ln = data.behaviors[f], data.lengths[f]
        cols[f] = pa.array(
            [[data.catalog.text(k) for k in b[i, : ln[i]]] for i in range(len(data))],
            pa.list_(pa.string()),
        )
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        pq.write_table(pa.table(cols), fh)
    return path


# ---------------------------------------------------------------------------- synthetic data

_SYLL = (
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "to",
    "vi",
    "da",
    "fe",
    "go",
    "hu",
    "ji",
    "be",
    "po",
    "ze",
    "wa",
    "yo",
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Planted-topic CTR data with long textual behaviours (ours; the paper's data is private).

    Each user has 1-3 latent topics. Each behaviour family holds ``behaviors_per_family``
    behaviours; a behaviour is a phrase of ``words_per_behavior`` words drawn from a catalogue of
    ``phrases_per_topic`` phrases per (family, topic), so behaviours repeat across users (the
    dedup BAHE exploits). With probability ``signal`` a behaviour comes from one of the user's
    topics, else from a random topic. An item's title holds words of its topic. The click logit
    is ``alpha * [item topic in user topics] + noise * N(0, 1) + offset`` (offset calibrated to
    ``positive_rate``).
    """

    n_users: int = 600
    n_items: int = 300
    n_rows: int = 8000
    n_topics: int = 8
    families: tuple[str, ...] = ("bill", "search", "visit")
    behaviors_per_family: int = 16
    words_per_behavior: int = 6
    phrases_per_topic: int = 40
    words_per_topic: int = 30
    signal: float = 0.8
    alpha: float = 3.0
    noise: float = 0.5
    positive_rate: float = 0.35
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "n_users",
            "n_items",
            "n_rows",
            "n_topics",
            "behaviors_per_family",
            "words_per_behavior",
            "phrases_per_topic",
            "words_per_topic",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"SyntheticConfig.{name} must be a positive int, got {v!r}")
        if self.n_topics < 2:
            raise ValueError("SyntheticConfig.n_topics must be >= 2")
        if not self.families or len(set(self.families)) != len(self.families):
            raise ValueError(
                f"SyntheticConfig.families must be distinct and non-empty: {self.families}"
            )
        if self.words_per_behavior < 2:
            raise ValueError("SyntheticConfig.words_per_behavior must be >= 2")
        if not 0 <= self.signal <= 1:
            raise ValueError("SyntheticConfig.signal must be in [0, 1]")
        if not 0 < self.positive_rate < 1 or not 0 < self.test_fraction < 1:
            raise ValueError("SyntheticConfig.positive_rate and test_fraction must be in (0, 1)")
        if self.noise < 0:
            raise ValueError("SyntheticConfig.noise must be >= 0")

    @property
    def tokens_per_user(self) -> int:
        """Behaviour tokens per user with a word-level tokenizer (families x M x K)."""
        return len(self.families) * self.behaviors_per_family * self.words_per_behavior


def _make_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice(_SYLL, size=int(rng.integers(2, 4))))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def make_synthetic(cfg: SyntheticConfig | None = None) -> tuple[CTRData, CTRData, dict[str, Any]]:
    """Generate ``(train, test, truth)``; both splits share one catalogue. ``truth`` holds the
    true click probabilities of the test rows (``p_test``) and the planted parameters."""
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng([cfg.seed, 2024])
    taken: set[str] = set()
    topic_words = [_make_words(rng, cfg.words_per_topic, taken) for _ in range(cfg.n_topics)]
    filler = _make_words(rng, 40, taken)
    prefix = {f: _make_words(rng, 1, taken)[0] for f in cfg.families}
    k = cfg.words_per_behavior - 1
    n_topic_words = max(1, (k + 1) // 2)
    phrases = {
        f: [
            [
                " ".join(
                    [
                        prefix[f],
                        *list(
                            rng.permutation(
                                [
                                    *rng.choice(topic_words[t], n_topic_words, replace=False),
                                    *rng.choice(filler, k - n_topic_words, replace=True),
                                ]
                            )
                        ),
                    ]
                )
                for _ in range(cfg.phrases_per_topic)
            ]
            for t in range(cfg.n_topics)
        ]
        for f in cfg.families
    }
    n_ut = rng.integers(1, 4, cfg.n_users)
    user_topics = [rng.choice(cfg.n_topics, int(m), replace=False) for m in n_ut]
    member = np.zeros((cfg.n_users, cfg.n_topics), bool)
    for u, ts in enumerate(user_topics):
        member[u, ts] = True
    user_seqs = {}
    for f in cfg.families:
        seqs = []
        for u in range(cfg.n_users):
            seq = []
            for _ in range(cfg.behaviors_per_family):
                t = (
                    rng.choice(user_topics[u])
                    if rng.random() < cfg.signal
                    else rng.integers(cfg.n_topics)
                )
                seq.append(phrases[f][int(t)][int(rng.integers(cfg.phrases_per_topic))])
            seqs.append(seq)
        user_seqs[f] = seqs
    item_topic = rng.integers(0, cfg.n_topics, cfg.n_items)
    titles = [
        " ".join(
            rng.permutation(
                [*rng.choice(topic_words[item_topic[i]], 4, replace=False), *rng.choice(filler, 2)]
            )
        )
        + f" {i}"
        for i in range(cfg.n_items)
    ]
    users = rng.integers(0, cfg.n_users, cfg.n_rows)
    items = rng.integers(0, cfg.n_items, cfg.n_rows)
    z = cfg.alpha * member[users, item_topic[items]] + cfg.noise * rng.normal(size=cfg.n_rows)
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(z + mid)))).mean() > cfg.positive_rate:
            hi = mid
        else:
            lo = mid
    p = 1 / (1 + np.exp(-(z + (lo + hi) / 2)))
    labels = (rng.random(cfg.n_rows) < p).astype(np.int8)
    table = pa.table(
        {
            "label": pa.array(labels),
            "item_title": pa.array([titles[i] for i in items]),
            "user_id": pa.array([f"u{u}" for u in users]),
            "item_id": pa.array([f"i{i}" for i in items]),
            **{
                f: pa.array([user_seqs[f][u] for u in users], pa.list_(pa.string()))
                for f in cfg.families
            },
        }
    )
    data = CTRData.from_table(
        table,
        cfg.families,
        max_behaviors=cfg.behaviors_per_family,
        id_features=("user_id", "item_id"),
    )
    data.meta.update({"format": "synthetic", "config": cfg.__dict__.copy()})
    perm = np.random.default_rng([cfg.seed, 7]).permutation(cfg.n_rows)
    n_test = max(1, round(cfg.n_rows * cfg.test_fraction))
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    truth = {
        "p_test": p[test_idx],
        "user_topics": [t.tolist() for t in user_topics],
        "item_topic": item_topic,
        "oracle_auc_note": "AUC of p_test against the test labels is the best any model can do",
    }
    return data.subset(train_idx), data.subset(test_idx), truth
