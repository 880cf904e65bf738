"""The behaviour store: BAHE's offline table of atomic-behaviour vectors (BAHE §2, "offline
database"), versioned, memory-mapped and refreshed incrementally.

Layout of a store directory (``N`` is the store's version, bumped by every refresh)::

    manifest.json                 the commit point (written last, atomically)
    keys-vN.npy                   int64 [n], sorted ascending: stable behaviour keys (bahe.text)
    vectors-vN.npy                float16|float32 [n, d], row i belongs to keys[i]
    archive/part-vM-00000.parquet key, text, n_tokens, vector (fixed_size_list) per behaviour;
                                  one part per version that added behaviours (interchange)

Serving reads ``vectors-vN.npy`` through ``numpy.load(mmap_mode="r")``: opening a store maps the
file and copies nothing; a lookup gathers only the rows of the batch (and upcasts them to
float32). Parquet is the archive: compressed and portable, but decoded on read, so it is not the
serving format.

Safety:

* every file is written to a temporary name, fsynced and renamed (``shared.atomic_write``), and
  the manifest, which names the files of the current version with their sizes and SHA-256, is
  written last: a crash leaves the previous version intact;
* :meth:`BehaviorStore.open` refuses a store whose files are missing, truncated or (with
  ``verify="full"``) altered, and one whose identity (model, fingerprint of the lower layers,
  split layer, pooling, tokenizer fingerprint, dim) differs from the model it is used with;
* building runs data-parallel when ``torch.distributed`` is initialised (torchrun or
  ``shared.spawn``): each rank encodes a contiguous slice of the sorted unique keys into a staging
  shard and rank 0 merges them under one manifest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from shared import atomic_write, atomic_write_text

from .text import BehaviorCatalog, Normalization

__all__ = [
    "STORE_FORMAT",
    "STORE_FORMAT_VERSION",
    "BehaviorStore",
    "StoreCorruptError",
    "StoreError",
    "StoreMismatchError",
    "build_store",
]

STORE_FORMAT = "bahe-behavior-store"
STORE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_DTYPES = {"float16": np.float16, "float32": np.float32}
#: identity fields a store must share with the SplitLM that reads it
IDENTITY_FIELDS = (
    "model_id",
    "model_fingerprint",
    "family",
    "num_layers",
    "num_lower",
    "pooling",
    "hidden_size",
    "max_behavior_tokens",
    "tokenizer_fingerprint",
)


class StoreError(RuntimeError):
    """A behaviour store cannot be used; the message says why and what to do."""


class StoreCorruptError(StoreError):
    """Files of a store are missing, truncated or altered."""


class StoreMismatchError(StoreError):
    """A store was built by a different model, split, pooling or tokenizer."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_entry(path: Path, rows: int | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
    if rows is not None:
        e["rows"] = rows
    return e


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StoreStats:
    count: int
    dim: int
    dtype: str
    version: int
    bytes: int


class BehaviorStore:
    """An opened behaviour store (read-only, memory-mapped). Use :meth:`open`."""

    def __init__(self, root: Path, manifest: dict[str, Any], keys: np.ndarray, vectors: np.ndarray):
        self.root = root
        self.manifest = manifest
        self.keys = keys
        self.vectors = vectors  # np.memmap view of vectors-vN.npy (zero-copy)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        *,
        expect: dict[str, Any] | None = None,
        verify: str = "size",
    ) -> BehaviorStore:
        """Open a store read-only.

        Args:
            root: the store directory.
            expect: an identity (``SplitLM.identity()``) the store must match; a difference in
                any :data:`IDENTITY_FIELDS` raises :class:`StoreMismatchError`.
            verify: ``"size"`` (default: files exist with the recorded sizes and shapes),
                ``"full"`` (also SHA-256 of every file) or ``"none"``.
        """
        if verify not in ("size", "full", "none"):
            raise ValueError(f"verify must be 'size', 'full' or 'none', got {verify!r}")
        root = Path(root)
        mpath = root / MANIFEST
        if not root.is_dir():
            raise StoreError(f"{root} is not a directory: no behaviour store there")
        if not mpath.is_file():
            raise StoreError(
                f"{root} has no {MANIFEST}: not a behaviour store, or its first build was "
                "interrupted before the manifest was committed; rebuild it"
            )
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreCorruptError(f"{mpath} is not valid JSON ({e}); rebuild the store") from e
        if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"{mpath} is not a {STORE_FORMAT} manifest")
        if manifest.get("format_version") != STORE_FORMAT_VERSION:
            raise StoreError(
                f"{mpath}: format_version {manifest.get('format_version')!r} is not supported "
                f"(this bahe reads {STORE_FORMAT_VERSION})"
            )
        try:
            count, dim, dtype = int(manifest["count"]), int(manifest["dim"]), manifest["dtype"]
            files = manifest["files"]
            kname, vname = files["keys"]["name"], files["vectors"]["name"]
        except (KeyError, TypeError, ValueError) as e:
            raise StoreCorruptError(f"{mpath} lacks a required field ({e})") from e
        if dtype not in _DTYPES:
            raise StoreCorruptError(f"{mpath}: dtype {dtype!r} is not one of {sorted(_DTYPES)}")
        if verify != "none":
            entries = [files["keys"], files["vectors"], *files.get("archive", [])]
            sub = {files["keys"]["name"]: root, files["vectors"]["name"]: root}
            for e in entries:
                p = sub.get(e["name"], root / "archive") / e["name"]
                if not p.is_file():
                    raise StoreCorruptError(
                        f"{p} is missing (named by {mpath}, version {manifest.get('version')}); "
                        "the store is incomplete: rebuild it"
                    )
                size = p.stat().st_size
                if size != e["bytes"]:
                    raise StoreCorruptError(
                        f"{p} has {size} bytes but the manifest records {e['bytes']}: the file is "
                        f"{'truncated' if size < e['bytes'] else 'altered'}; rebuild the store"
                    )
                if verify == "full" and _sha256(p) != e["sha256"]:
                    raise StoreCorruptError(
                        f"{p} does not match its SHA-256 in the manifest: altered or corrupt"
                    )
        try:
            keys = np.load(root / kname, mmap_mode="r", allow_pickle=False)
            vectors = np.load(root / vname, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise StoreCorruptError(
                f"cannot map the files of {root}: {e}; rebuild the store"
            ) from e
        if keys.shape != (count,) or keys.dtype != np.int64:
            raise StoreCorruptError(
                f"{kname}: shape {keys.shape} dtype {keys.dtype}, manifest says ({count},) int64"
            )
        if vectors.shape != (count, dim) or vectors.dtype != _DTYPES[dtype]:
            raise StoreCorruptError(
                f"{vname}: shape {vectors.shape} dtype {vectors.dtype}, manifest says "
                f"({count}, {dim}) {dtype}"
            )
        if count > 1 and not bool(np.all(keys[1:] > keys[:-1])):
            raise StoreCorruptError(f"{kname}: keys are not strictly increasing (corrupt index)")
        store = cls(root, manifest, keys, vectors)
        if expect is not None:
            store.check(expect)
        return store

    # ------------------------------------------------------------------ identity

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self.manifest.get("identity", {}))

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def normalization(self) -> Normalization:
        return Normalization.from_dict(self.manifest["normalization"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def check(self, expect: dict[str, Any]) -> None:
        """Raise :class:`StoreMismatchError` unless this store was built by ``expect``'s model."""
        mine = self.identity
        diff = [
            f"{k}: store has {mine.get(k)!r}, model has {expect.get(k)!r}"
            for k in IDENTITY_FIELDS
            if k in expect and mine.get(k) != expect.get(k)
        ]
        if diff:
            raise StoreMismatchError(
                f"the behaviour store at {self.root} was built by a different model/split "
                f"(version {self.version}): " + "; ".join(diff) + ". Rebuild it with this model "
                "(python -m bahe build-store), never mix stores"
            )

    # ------------------------------------------------------------------ lookups

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """Row index of each key (``-1`` where the store lacks it); any shape."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(self.keys) == 0:
            return np.full(keys.shape, -1, np.int64)
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        hit = np.asarray(self.keys[pos]) == keys
        return np.where(hit, pos, -1).astype(np.int64)

    def __contains__(self, key: int) -> bool:
        return bool(self.rows(np.array([key]))[0] >= 0)

    def gather(self, rows: np.ndarray, *, device: Any = None) -> torch.Tensor:
        """Vectors of ``rows`` (any shape; ``-1`` gives a zero row) as float32 ``[..., d]``.

        Only the requested rows are read from the map; the result is a fresh (small) tensor.
        """
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        out = np.zeros((flat.size, self.dim), dtype=np.float32)
        ok = flat >= 0
        if ok.any():
            out[ok] = self.vectors[flat[ok]]
        t = torch.from_numpy(out).reshape(*rows.shape, self.dim)
        return t.to(device) if device is not None else t

    def lookup(
        self, keys: np.ndarray, *, missing: str = "error", device: Any = None
    ) -> torch.Tensor:
        """Vectors of behaviour ``keys``; ``missing="error"`` raises on an unknown key,
        ``"zero"`` gives it a zero vector."""
        if missing not in ("error", "zero"):
            raise ValueError(f"missing must be 'error' or 'zero', got {missing!r}")
        r = self.rows(keys)
        if missing == "error" and (r < 0).any():
            n = int((r < 0).sum())
            raise KeyError(
                f"{n} behaviour key(s) are not in the store at {self.root} (e.g. "
                f"{int(np.asarray(keys).reshape(-1)[np.argmax(r.reshape(-1) < 0)])}); refresh it "
                "with the new behaviours (python -m bahe build-store --refresh)"
            )
        return self.gather(r, device=device)

    def texts(self) -> dict[int, str]:
        """key -> normalised text, read from the parquet archive (decoded; not for serving)."""
        out: dict[int, str] = {}
        for e in self.manifest["files"].get("archive", []):
            t = pq.read_table(self.root / "archive" / e["name"], columns=["key", "text"])
            out.update(zip(t.column("key").to_pylist(), t.column("text").to_pylist(), strict=True))
        return out

    def read_archive(self) -> pa.Table:
        """The whole parquet archive as one table (key, text, n_tokens, vector, version)."""
        parts = [
            pq.read_table(self.root / "archive" / e["name"])
            for e in self.manifest["files"]["archive"]
        ]
        return pa.concat_tables(parts) if parts else pa.table({})

    def stats(self) -> StoreStats:
        return StoreStats(
            len(self), self.dim, self.manifest["dtype"], self.version, self.vectors.nbytes
        )


# ---------------------------------------------------------------------------- building


def _as_catalog(behaviors: BehaviorCatalog | Iterable[str], norm: Normalization) -> BehaviorCatalog:
    if isinstance(behaviors, BehaviorCatalog):
        if behaviors.norm != norm:
            raise ValueError("the catalogue's normalisation differs from the store's")
        return behaviors
    if isinstance(behaviors, str):
        raise TypeError("behaviors must be an iterable of strings or a BehaviorCatalog, not a str")
    cat = BehaviorCatalog(norm)
    cat.add_many(behaviors)
    return cat


def _encode(lm: Any, texts: list[str], batch_size: int, show: bool, desc: str):
    from shared import progress

    vecs = []
    ntok = []
    bar = progress(total=len(texts), desc=desc, disable=(not show) or None)
    for s in range(0, len(texts), batch_size):
        chunk = texts[s : s + batch_size]
        enc = lm.tokenize(chunk)
        from .lm import pool

        h = lm.lower_hidden(enc["input_ids"], enc["attention_mask"])
        vecs.append(pool(h, enc["attention_mask"], lm.pooling).float().cpu().numpy())
        ntok.append(enc["attention_mask"].sum(1).cpu().numpy().astype(np.int32))
        bar.update(len(chunk))
    bar.close()
    if not vecs:
        return np.zeros((0, lm.hidden_size), np.float32), np.zeros(0, np.int32)
    return np.concatenate(vecs), np.concatenate(ntok)


def _length_sorted(keys: np.ndarray, texts: list[str]) -> np.ndarray:
    """Order that groups similar lengths (less padding per batch); deterministic."""
    return np.array(
        sorted(range(len(texts)), key=lambda i: (len(texts[i]), int(keys[i]))), dtype=np.int64
    )


def _dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _broadcast_obj(obj: Any) -> Any:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def build_store(
    behaviors: BehaviorCatalog | Iterable[str],
    lm: Any,
    root: str | os.PathLike[str],
    *,
    dtype: str = "float16",
    batch_size: int = 256,
    refresh: bool = False,
    overwrite: bool = False,
    normalization: Normalization | None = None,
    show_progress: bool = False,
) -> BehaviorStore:
    """Encode every unique behaviour once with ``lm``'s frozen lower layers and write a store.

    Args:
        behaviors: a :class:`~bahe.text.BehaviorCatalog` or raw behaviour strings (deduplicated
            here).
        lm: the :class:`~bahe.lm.SplitLM` (its identity goes into the manifest).
        root: the store directory.
        dtype: ``"float16"`` (default, half the bytes) or ``"float32"`` (exact cache).
        refresh: add only behaviours the existing store lacks, as a new version (the existing
            store must match ``lm``); without it an existing store raises unless ``overwrite``.
        show_progress: draw a progress bar of the encoding.

    With ``torch.distributed`` initialised every rank must call this with the same behaviours:
    each encodes a contiguous slice of the keys to encode, rank 0 merges the shards and commits
    one manifest, and every rank returns the opened store. The root must be on a file system all
    ranks see.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    root = Path(root)
    rank, world = _dist_info()
    identity = lm.identity()
    norm = normalization or (
        behaviors.norm if isinstance(behaviors, BehaviorCatalog) else Normalization()
    )
    cat = _as_catalog(behaviors, norm)
    all_keys = cat.keys()

    # ---- what to encode (every rank decides the same)
    old: BehaviorStore | None = None
    if (root / MANIFEST).exists():
        if refresh:
            old = BehaviorStore.open(root, expect=identity)
            if old.normalization != norm:
                raise StoreMismatchError(
                    f"{root}: store normalisation {old.normalization} differs from {norm}"
                )
            if old.manifest["dtype"] != dtype:
                raise StoreMismatchError(
                    f"{root}: store dtype {old.manifest['dtype']} differs from requested {dtype}"
                )
        elif not overwrite:
            raise StoreError(
                f"{root} already holds a behaviour store (version "
                f"{json.loads((root / MANIFEST).read_text()).get('version')}); pass refresh=True "
                "to add new behaviours or overwrite=True to replace it"
            )
    todo = all_keys if old is None else all_keys[old.rows(all_keys) < 0]
    if world > 1:
        import torch.distributed as dist

        digest = hashlib.sha256(todo.tobytes()).hexdigest()
        seen: list[Any] = [None] * world
        dist.all_gather_object(seen, digest)
        if len(set(seen)) != 1:
            raise StoreError(
                "ranks were given different behaviours to build a store from; every rank must "
                "pass the same catalogue"
            )

    # ---- encode this rank's slice
    t0 = time.perf_counter()
    slices = np.array_split(np.arange(len(todo)), world)
    mine = todo[slices[rank]]
    texts = [cat.text(k) for k in mine]
    order = _length_sorted(mine, texts)
    vec_sorted, ntok_sorted = _encode(
        lm, [texts[i] for i in order], batch_size, show_progress and rank == 0, "encode behaviours"
    )
    vec = np.empty_like(vec_sorted)
    ntok = np.empty_like(ntok_sorted)
    vec[order] = vec_sorted
    ntok[order] = ntok_sorted
    encode_s = time.perf_counter() - t0

    staging = root / ".staging"
    if world > 1:
        if rank == 0:
            staging.mkdir(parents=True, exist_ok=True)
        _barrier()
        _save_npy(staging / f"shard-{rank:05d}-vec.npy", vec.astype(_DTYPES[dtype]))
        _save_npy(staging / f"shard-{rank:05d}-ntok.npy", ntok)
        _barrier()

    if rank == 0:
        if world > 1:
            vec = np.concatenate(
                [np.load(staging / f"shard-{r:05d}-vec.npy") for r in range(world)]
            )
            ntok = np.concatenate(
                [np.load(staging / f"shard-{r:05d}-ntok.npy") for r in range(world)]
            )
        stats = {
            "occurrences": cat.occurrences,
            "unique": len(all_keys),
            "dedup_ratio": cat.dedup_ratio,
            "encoded": len(todo),
            "encode_seconds_rank0": encode_s,
            "world_size": world,
        }
        _commit(
            root, old, identity, norm, dtype, todo, [cat.text(k) for k in todo], ntok, vec, stats
        )
        if world > 1:
            shutil.rmtree(staging, ignore_errors=True)
    _barrier()
    return BehaviorStore.open(root, expect=identity)


def _commit(
    root: Path,
    old: BehaviorStore | None,
    identity: dict[str, Any],
    norm: Normalization,
    dtype: str,
    new_keys: np.ndarray,
    new_texts: list[str],
    new_ntok: np.ndarray,
    new_vec: np.ndarray,
    stats: dict[str, Any],
) -> None:
    """Write version ``old.version + 1`` (or 1): archive part, merged keys/vectors, manifest."""
    np_dtype = _DTYPES[dtype]
    version = 1 if old is None else old.version + 1
    root.mkdir(parents=True, exist_ok=True)
    (root / "archive").mkdir(exist_ok=True)
    new_vec = np.asarray(new_vec).astype(np_dtype, copy=False)
    d = int(identity["hidden_size"])
    if new_vec.ndim != 2 or new_vec.shape[1] != d:
        raise StoreError(f"encoded vectors have shape {new_vec.shape}, expected (n, {d})")

    archive = list(old.manifest["files"]["archive"]) if old is not None else []
    if len(new_keys):
        flat = pa.array(new_vec.reshape(-1))
        table = pa.table(
            {
                "key": pa.array(new_keys, pa.int64()),
                "text": pa.array(new_texts, pa.string()),
                "n_tokens": pa.array(new_ntok, pa.int32()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, d),
                "version": pa.array(np.full(len(new_keys), version, np.int32)),
            }
        )
        part = root / "archive" / f"part-v{version:05d}-00000.parquet"
        with atomic_write(part, "wb") as f:
            pq.write_table(table, f, compression="zstd", row_group_size=65536)
        archive.append(_file_entry(part, rows=len(new_keys)))

    if old is not None:
        keys = np.concatenate([np.asarray(old.keys), new_keys])
        vecs = np.concatenate([np.asarray(old.vectors), new_vec])
    else:
        keys, vecs = new_keys, new_vec
    order = np.argsort(keys, kind="stable")
    keys, vecs = keys[order], vecs[order]
    if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        raise StoreError("duplicate behaviour keys while merging (internal error)")
    v64 = vecs.astype(np.float64)
    stats = {
        **stats,
        "vector_mean": v64.mean(0).tolist() if len(vecs) else [0.0] * d,
        "vector_std": float(v64.std()) if len(vecs) else 1.0,
    }
    kpath, vpath = root / f"keys-v{version:05d}.npy", root / f"vectors-v{version:05d}.npy"
    _save_npy(kpath, keys)
    _save_npy(vpath, vecs)
    history = list(old.manifest.get("history", [])) if old is not None else []
    history.append({"version": version, "added": len(new_keys), "created": _now()})
    manifest = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "version": version,
        "identity": identity,
        "normalization": norm.to_dict(),
        "dtype": dtype,
        "dim": d,
        "count": len(keys),
        "files": {
            "keys": _file_entry(kpath, rows=len(keys)),
            "vectors": _file_entry(vpath, rows=len(keys)),
            "archive": archive,
        },
        "stats": stats,
        "history": history,
        "created": _now(),
    }
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    # files of earlier versions (or of a replaced store) are no longer named by the manifest
    named = {kpath.name, vpath.name}
    for p in [*root.glob("keys-v*.npy"), *root.glob("vectors-v*.npy")]:
        if p.name not in named:
            p.unlink(missing_ok=True)
    kept = {e["name"] for e in archive}
    for p in (root / "archive").glob("part-v*.parquet"):
        if p.name not in kept:
            p.unlink(missing_ok=True)
