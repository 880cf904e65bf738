"""Feature pipeline: prepared parquet keys -> model inputs (vocabularies or hashing) -> batches.

The prepared parquet stores 64-bit keys (:mod:`antm2c.pipeline`); this module decides how keys
become embedding rows, FuxiCTR-style, with one :class:`FeatureSpec` for every model:

* ``id_mode="vocab"``: a vocabulary per field built by streaming the **training split only**
  (unique keys with counts, ``min_count``), index 0 = padding, 1 = out-of-vocabulary. Keys
  unseen in training (cold users/items, new tokens) map to OOV, which is what cold-start means;
* ``id_mode="hash"``: ``2 + key mod (buckets - 2)``, one pass and no state, the only option at
  the paper's 1 B-row / 200 M-user scale (a dict vocabulary would not fit).

:class:`ParquetStream` yields tensor batches by streaming parquet record batches through a
bounded shuffle buffer; it never loads a split into memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .schema import DEEP_FEATURES, LABEL, SCENE, TEXT_COLUMNS, TIME, DeepFeatureTypes

__all__ = ["Batch", "FeatureEncoder", "FeatureSpec", "ParquetStream", "load_image_embeddings"]

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns feed the model and how keys become indices.

    ``sparse``: categorical key columns (one embedding each); ``sequences``: text token-list
    columns (mean-pooled bag of token embeddings); ``dense``: numeric columns (standardised with
    training statistics, missing -> 0); ``image``: a parquet of pre-computed item image
    embeddings keyed by original item id (see :data:`antm2c.schema.IMAGE_EMBEDDING_SCHEMA`).
    """

    sparse: tuple[str, ...] = ("user_id", "item_id", SCENE)
    sequences: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()
    id_mode: str = "vocab"
    hash_buckets: int = 1 << 18
    min_count: int = 1
    max_len: int = 16
    image: str | None = None

    def __post_init__(self) -> None:
        known_sparse = {"user_id", "item_id", SCENE, *DEEP_FEATURES}
        bad = [c for c in self.sparse if c not in known_sparse]
        if bad:
            raise ValueError(f"FeatureSpec.sparse: unknown columns {bad}")
        bad = [c for c in self.sequences if c not in TEXT_COLUMNS]
        if bad:
            raise ValueError(
                f"FeatureSpec.sequences: unknown text columns {bad}; "
                f"choose from {list(TEXT_COLUMNS)}"
            )
        bad = [c for c in self.dense if c not in DEEP_FEATURES]
        if bad:
            raise ValueError(f"FeatureSpec.dense: unknown columns {bad}")
        if self.id_mode not in ("vocab", "hash"):
            raise ValueError(f"id_mode must be 'vocab' or 'hash', got {self.id_mode!r}")
        if self.hash_buckets < 3 or self.min_count < 1 or self.max_len < 1:
            raise ValueError("need hash_buckets >= 3, min_count >= 1, max_len >= 1")
        if not (self.sparse or self.sequences or self.dense or self.image):
            raise ValueError("FeatureSpec selects no features")
        if len(set(self.sparse) | set(self.dense)) != len(self.sparse) + len(self.dense):
            raise ValueError("a column is listed twice in FeatureSpec")

    @classmethod
    def preset(cls, name: str, deep: DeepFeatureTypes | None = None, **kw: Any) -> FeatureSpec:
        """Named feature sets: ``id`` (ids + scene), ``tabular`` (ids + all deep features),
        ``text`` (``id`` + all five text fields), ``full`` (tabular + text)."""
        deep = deep or DeepFeatureTypes()
        ids = ("user_id", "item_id", SCENE)
        tab = {"sparse": ids + deep.categorical_columns, "dense": deep.numeric_columns}
        presets = {
            "id": {"sparse": ids},
            "tabular": tab,
            "text": {"sparse": ids, "sequences": TEXT_COLUMNS},
            "full": {**tab, "sequences": TEXT_COLUMNS},
        }
        if name not in presets:
            raise ValueError(f"unknown feature preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **kw})

    @property
    def columns(self) -> list[str]:
        base = ["row", "user_id", "item_id", LABEL, SCENE, TIME]
        return list(
            dict.fromkeys(base + list(self.sparse) + list(self.sequences) + list(self.dense))
        )


def _flat_lists(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths) of a list<int64> column."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    lengths = pa.compute.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    values = pa.compute.list_flatten(col).to_numpy(zero_copy_only=False)
    return values.astype(np.int64, copy=False), lengths.astype(np.int64)


def _pad(values: np.ndarray, lengths: np.ndarray, max_len: int) -> np.ndarray:
    n = len(lengths)
    out = np.zeros((n, max_len), np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if n else np.zeros(0, np.int64)
    take = np.minimum(lengths, max_len)
    rows = np.repeat(np.arange(n), take)
    pos = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
    out[rows, pos] = values[np.repeat(starts, take) + pos]
    return out


class _Vocab:
    """Sorted unique keys with counts; lookup by binary search (0 pad, 1 OOV, rest known)."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)

    def update(self, keys: np.ndarray) -> None:
        k, c = np.unique(keys, return_counts=True)
        allk = np.concatenate([self.keys, k])
        allc = np.concatenate([self.counts, c])
        u, inv = np.unique(allk, return_inverse=True)
        self.counts = np.bincount(inv, weights=allc, minlength=len(u)).astype(np.int64)
        self.keys = u

    def finish(self, min_count: int, drop_zero: bool) -> None:
        keep = self.counts >= min_count
        if drop_zero:
            keep &= self.keys != 0
        self.keys, self.counts = self.keys[keep], self.counts[keep]

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.where(keys == 0, 0, 1)
        pos = np.searchsorted(self.keys, keys)
        pos_c = np.minimum(pos, len(self.keys) - 1)
        found = self.keys[pos_c] == keys
        return np.where(found, pos_c + 2, 1)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return self.lookup(keys) >= 2

    def __len__(self) -> int:
        return len(self.keys) + 2


def load_image_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an item image-embedding parquet -> (sorted item keys, [n, dim] float32 matrix)."""
    from .pipeline import key64

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image embedding file {p} does not exist")
    t = pq.read_table(p)
    if "item_id" not in t.column_names or "embedding" not in t.column_names:
        raise ValueError(f"{p}: need columns item_id (string) and embedding (list<float32>)")
    keys = key64(t.column("item_id").cast(pa.string()))
    emb = t.column("embedding").combine_chunks()
    lengths = pa.compute.list_value_length(emb).to_numpy(zero_copy_only=False)
    if len(lengths) == 0 or (lengths != lengths[0]).any():
        raise ValueError(f"{p}: embeddings must be non-empty and all of one length")
    mat = pa.compute.list_flatten(emb).to_numpy(zero_copy_only=False).astype(np.float32)
    mat = mat.reshape(len(keys), int(lengths[0]))
    order = np.argsort(keys)
    return keys[order], mat[order]


@dataclass
class FeatureEncoder:
    """Fitted key -> index mapping for one :class:`FeatureSpec` (fit on the training split)."""

    spec: FeatureSpec
    vocabs: dict[str, _Vocab] = field(default_factory=dict)
    seq_vocabs: dict[str, _Vocab] = field(default_factory=dict)
    dense_mean: np.ndarray | None = None
    dense_std: np.ndarray | None = None
    seen_users: _Vocab | None = None
    seen_items: _Vocab | None = None
    image_keys: np.ndarray | None = None
    image_mat: np.ndarray | None = None

    @classmethod
    def fit(
        cls, files: Sequence[str | Path], spec: FeatureSpec, batch_rows: int = 262_144
    ) -> FeatureEncoder:
        """Stream the training files once: vocabularies (vocab mode), dense moments, and the
        sets of users/items seen in training (for cold/warm evaluation)."""
        if not files:
            raise ValueError("cannot fit a feature encoder on zero training files")
        missing = [str(f) for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"training files do not exist: {missing[:3]}")
        enc = cls(spec=spec)
        if spec.image:
            enc.image_keys, enc.image_mat = load_image_embeddings(spec.image)
        enc.seen_users, enc.seen_items = _Vocab(), _Vocab()
        vocab_cols = list(spec.sparse) if spec.id_mode == "vocab" else []
        for c in vocab_cols:
            enc.vocabs[c] = _Vocab()
        if spec.id_mode == "vocab":
            for c in spec.sequences:
                enc.seq_vocabs[c] = _Vocab()
        nd = len(spec.dense)
        s1, s2, cnt = np.zeros(nd), np.zeros(nd), np.zeros(nd)
        cols = list(
            dict.fromkeys(["user_id", "item_id", *spec.sparse, *spec.sequences, *spec.dense])
        )
        for f in files:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=cols):
                enc.seen_users.update(rb.column("user_id").to_numpy())
                enc.seen_items.update(rb.column("item_id").to_numpy())
                for c in vocab_cols:
                    enc.vocabs[c].update(rb.column(c).to_numpy().astype(np.int64))
                for c in enc.seq_vocabs:
                    enc.seq_vocabs[c].update(_flat_lists(rb.column(c))[0])
                if nd:
                    x = np.stack(
                        [
                            rb.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                            for c in spec.dense
                        ],
                        1,
                    )
                    ok = np.isfinite(x)
                    s1 += np.where(ok, x, 0).sum(0)
                    s2 += np.where(ok, x * x, 0).sum(0)
                    cnt += ok.sum(0)
        for v in enc.vocabs.values():
            v.finish(spec.min_count, drop_zero=False)
        for v in enc.seq_vocabs.values():
            v.finish(spec.min_count, drop_zero=True)
        if nd:
            mean = s1 / np.maximum(cnt, 1)
            var = s2 / np.maximum(cnt, 1) - mean**2
            enc.dense_mean = mean.astype(np.float32)
            enc.dense_std = np.sqrt(np.maximum(var, 1e-12)).astype(np.float32)
        return enc

    # -- sizes the models need ------------------------------------------------------------
    @property
    def sparse_cardinalities(self) -> list[int]:
        if self.spec.id_mode == "hash":
            return [self.spec.hash_buckets] * len(self.spec.sparse)
        return [len(self.vocabs[c]) for c in self.spec.sparse]

    @property
    def sequence_cardinalities(self) -> list[int]:
        if self.spec.id_mode == "hash":
            return [self.spec.hash_buckets] * len(self.spec.sequences)
        return [len(self.seq_vocabs[c]) for c in self.spec.sequences]

    @property
    def image_dim(self) -> int:
        return 0 if self.image_mat is None else int(self.image_mat.shape[1])

    def _index(self, col: str, keys: np.ndarray, seq: bool = False) -> np.ndarray:
        if self.spec.id_mode == "hash":
            idx = 2 + np.mod(keys, self.spec.hash_buckets - 2)
            return np.where(keys == 0, 0, idx) if seq else idx
        v = self.seq_vocabs[col] if seq else self.vocabs[col]
        idx = v.lookup(keys)
        return np.where(keys == 0, 0, idx) if seq else idx

    def transform(self, table: pa.Table | pa.RecordBatch) -> dict[str, np.ndarray]:
        """Encode one table of prepared rows into numpy arrays (see :meth:`to_tensors`)."""
        spec = self.spec
        n = table.num_rows
        out: dict[str, np.ndarray] = {
            "label": table.column(LABEL).to_numpy().astype(np.float32),
            "scene": table.column(SCENE).to_numpy().astype(np.int64),
            "user": table.column("user_id").to_numpy().astype(np.int64),
            "item": table.column("item_id").to_numpy().astype(np.int64),
            "row": table.column("row").to_numpy().astype(np.int64),
        }
        out["cold_user"] = ~self.seen_users.contains(out["user"])
        out["cold_item"] = ~self.seen_items.contains(out["item"])
        if spec.sparse:
            out["sparse"] = np.stack(
                [self._index(c, table.column(c).to_numpy().astype(np.int64)) for c in spec.sparse],
                1,
            )
        if spec.sequences:
            seqs = []
            for c in spec.sequences:
                vals, lens = _flat_lists(table.column(c))
                seqs.append(_pad(self._index(c, vals, seq=True), lens, spec.max_len))
            out["seq"] = np.stack(seqs, 1)
        if spec.dense:
            x = np.stack(
                [
                    table.column(c).to_numpy(zero_copy_only=False).astype(np.float32)
                    for c in spec.dense
                ],
                1,
            )
            x = (x - self.dense_mean) / self.dense_std
            out["dense"] = np.nan_to_num(x, nan=0.0).astype(np.float32)
        if self.image_mat is not None:
            pos = np.searchsorted(self.image_keys, out["item"])
            pos_c = np.minimum(pos, len(self.image_keys) - 1)
            found = self.image_keys[pos_c] == out["item"]
            img = np.where(found[:, None], self.image_mat[pos_c], 0.0).astype(np.float32)
            out["image"] = img
        assert all(len(v) == n for v in out.values())
        return out


def to_tensors(arrays: dict[str, np.ndarray], device: str | torch.device = "cpu") -> Batch:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in arrays.items()}


class ParquetStream:
    """Re-iterable stream of tensor batches over parquet files.

    Without shuffling, files are read in order in ``read_rows``-row record batches (only the
    spec's columns). With ``shuffle=True`` the files' row groups are interleaved at random:
    every file keeps a cursor over its row groups (visited in a random order per epoch), and
    each next chunk of ``min(read_rows, buffer_rows // 16)`` rows comes from a file drawn with
    probability proportional to the rows it has left, so every part of the epoch mixes all
    files (one file per scene in a prepared split) in their proportions. Chunks then pass
    through a shuffle buffer of at most ``buffer_rows`` rows. Memory is bounded by the buffer
    plus one decoded row group per file, never by the split.

    ``len(stream)`` is the number of batches of one epoch (from the parquet metadata).
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        encoder: FeatureEncoder,
        *,
        batch_size: int = 1024,
        shuffle: bool = False,
        buffer_rows: int = 262_144,
        read_rows: int = 65_536,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1 or buffer_rows < 1 or read_rows < 1:
            raise ValueError("batch_size, buffer_rows and read_rows must be >= 1")
        self.files = [Path(f) for f in files]
        self.encoder, self.batch_size, self.shuffle = encoder, batch_size, shuffle
        self.buffer_rows, self.read_rows, self.seed, self.device = (
            buffer_rows,
            read_rows,
            seed,
            device,
        )
        self.epoch = 0
        self._rows: int | None = None

    @property
    def num_rows(self) -> int:
        if self._rows is None:
            self._rows = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
        return self._rows

    def __len__(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def _chunks(self, rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
        cols = self.encoder.spec.columns
        if not self.shuffle:
            for f in self.files:
                for rb in pq.ParquetFile(f).iter_batches(batch_size=self.read_rows, columns=cols):
                    yield self.encoder.transform(rb)
            return
        unit = max(1, min(self.read_rows, self.buffer_rows // 16))
        cursors = []
        for f in self.files:
            pf = pq.ParquetFile(f)
            md = pf.metadata
            groups = [i for i in range(md.num_row_groups) if md.row_group(i).num_rows > 0]
            order = [groups[i] for i in rng.permutation(len(groups))]
            left = sum(md.row_group(i).num_rows for i in groups)
            if left:
                cursors.append({"pf": pf, "groups": order, "table": None, "pos": 0, "left": left})
        while cursors:
            w = np.array([c["left"] for c in cursors], np.float64)
            c = cursors[int(rng.choice(len(cursors), p=w / w.sum()))]
            if c["table"] is None or c["pos"] >= c["table"].num_rows:
                c["table"], c["pos"] = c["pf"].read_row_group(c["groups"].pop(0), columns=cols), 0
            piece = c["table"].slice(c["pos"], unit)
            c["pos"] += piece.num_rows
            c["left"] -= piece.num_rows
            if c["left"] <= 0:
                cursors.remove(c)
            yield self.encoder.transform(piece)

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        buf: list[dict[str, np.ndarray]] = []
        nbuf = 0

        def drain(final: bool) -> Iterator[Batch]:
            nonlocal buf, nbuf
            if not buf:
                return
            cat = {k: np.concatenate([b[k] for b in buf]) for k in buf[0]}
            n = len(cat["label"])
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            stop = n if final else (n // self.batch_size) * self.batch_size
            for s in range(0, stop, self.batch_size):
                sel = order[s : s + self.batch_size]
                yield to_tensors({k: v[sel] for k, v in cat.items()}, self.device)
            rest = order[stop:]
            buf = [{k: v[rest] for k, v in cat.items()}] if len(rest) else []
            nbuf = len(rest)

        for chunk in self._chunks(rng):
            buf.append(chunk)
            nbuf += len(chunk["label"])
            if nbuf >= (self.buffer_rows if self.shuffle else self.batch_size):
                yield from drain(final=False)
        yield from drain(final=True)
