"""Meta-IO: task-major parquet, a builder from interaction logs, a prefetching per-rank loader.

G-Meta's Meta-IO (Sec. 3.3) exists because a conventional pipeline streams flat samples and has
to regroup them into tasks (support and query) at load time. Here the regrouping happens once,
offline (:func:`build_tasks`), and training streams ready tasks (:class:`MetaIOLoader`):

* **Layout.** One parquet row per task: ``task_id``, the task key columns, ``n_support``,
  ``n_query`` and, per set, ``*_sparse`` (``FixedSizeList<int64>[n*F]``, global table rows),
  ``*_dense`` (``FixedSizeList<float32>[n*Dd]``), ``*_label`` (``FixedSizeList<int8>[n]``).
  Support and query of a task are stored together ("task-consistent batching"). Fixed ``K``/``Q``
  (padding repeats a set's first row, masked out) make a batch one set of dense tensors: decoding
  is ``to_numpy`` views and ``torch.from_numpy``, no per-task Python. Row groups hold
  ``row_group_tasks`` tasks; page checksums are written and verified, and a JSON header in the
  schema metadata (key ``gmeta``) records the shapes, fields and table size.
* **Split.** Per task, rows sorted by time (ties by log order): the first
  ``min(K, n - min_query)`` are the support set, the next ``min(Q, ...)`` the query set
  (``split="time"``); or the same after a seeded per-task shuffle (``split="random"``). Tasks
  with fewer than ``min_support`` support or ``min_query`` query rows are dropped (counted).
* **Per-rank assignment.** Global batch ``i`` is tasks ``[iB, (i+1)B)`` of the file; rank ``r``
  takes the ``r``-th contiguous share (:func:`gmeta.tasks.split_counts`: sizes differ by at most
  one, possibly zero). The global batch is the same at every world size, which is what makes the
  distributed result equal the single-process one. A rank reads only the row groups that overlap
  its shares.
* **Prefetch.** A background thread reads and decodes the next ``prefetch`` batches (pyarrow
  releases the GIL while decoding).

Fields: every sparse column becomes one field of the fused table with ``size`` rows at an offset;
values are used as ids (``hash=False``: must already lie in ``[0, size)``) or hashed
(``hash=True``: splitmix64 of integers, blake2b of strings, modulo ``size``).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from gmeta.tasks import TaskBatch, split_counts
from shared import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "BuildReport",
    "FieldSpec",
    "MetaIOError",
    "MetaIOLoader",
    "NaiveTaskLoader",
    "TaskSpec",
    "build_tasks",
    "hash_column",
    "read_header",
]

FORMAT = "gmeta-tasks"
FORMAT_VERSION = 1
META_KEY = b"gmeta"
SPLITS = ("time", "random")


class MetaIOError(ValueError):
    """A task file or log is missing, corrupt or does not match what was asked; says which."""


@dataclass(frozen=True)
class FieldSpec:
    """One sparse feature column: ``size`` table rows, ids used as-is or hashed into them."""

    column: str
    size: int
    hash: bool = False

    def __post_init__(self) -> None:
        if not self.column:
            raise ValueError("FieldSpec.column must be a column name")
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"FieldSpec({self.column!r}).size must be a positive int")


@dataclass(frozen=True)
class TaskSpec:
    """How to turn an interaction log into tasks (validated on construction)."""

    fields: tuple[FieldSpec, ...]
    dense_columns: tuple[str, ...]
    k: int = 10
    q: int = 10
    task_keys: tuple[str, ...] = ("user_id",)
    time_column: str = "ts"
    label_column: str = "label"
    min_support: int | None = None
    min_query: int = 1
    split: str = "time"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "dense_columns", tuple(self.dense_columns))
        object.__setattr__(self, "task_keys", tuple(self.task_keys))
        if not self.fields:
            raise ValueError("TaskSpec needs at least one sparse field")
        if not self.dense_columns:
            raise ValueError("TaskSpec needs at least one dense column")
        if not self.task_keys:
            raise ValueError("TaskSpec.task_keys must name at least one column")
        for name in ("k", "q", "min_query"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"TaskSpec.{name} must be a positive int, got {v!r}")
        if self.min_support is None:
            object.__setattr__(self, "min_support", self.k)
        if not 1 <= self.min_support <= self.k:
            raise ValueError(f"TaskSpec.min_support must be in [1, k={self.k}]")
        if self.min_query > self.q:
            raise ValueError(f"TaskSpec.min_query must be <= q={self.q}")
        if self.split not in SPLITS:
            raise ValueError(f"TaskSpec.split must be one of {SPLITS}, got {self.split!r}")
        names = [f.column for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"TaskSpec fields repeat a column: {names}")

    @property
    def num_rows(self) -> int:
        return sum(f.size for f in self.fields)

    @property
    def offsets(self) -> list[int]:
        return list(np.cumsum([0] + [f.size for f in self.fields])[:-1].tolist())

    def columns(self) -> list[str]:
        cols = [*self.task_keys, self.time_column, self.label_column]
        cols += [f.column for f in self.fields] + list(self.dense_columns)
        return list(dict.fromkeys(cols))


# --------------------------------------------------------------------------- hashing


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_column(col: pa.ChunkedArray | pa.Array, size: int) -> np.ndarray:
    """Stable hash of a column into ``[0, size)``: splitmix64 of integers, blake2b of strings."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar("" if pa.types.is_string(arr.type) else 0, arr.type))
    if pa.types.is_integer(arr.type):
        h = _splitmix64(np.asarray(arr.to_numpy(zero_copy_only=False)).astype(np.int64))
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        enc = pc.dictionary_encode(arr)
        dic = enc.dictionary.to_pylist()
        codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False)).astype(np.int64)
        hd = np.array(
            [
                int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
                for s in dic
            ],
            dtype=np.uint64,
        )
        h = hd[codes] if len(hd) else np.zeros(len(codes), np.uint64)
    else:
        raise MetaIOError(f"cannot hash a column of type {arr.type} (integers or strings only)")
    return (h % np.uint64(size)).astype(np.int64)


# --------------------------------------------------------------------------- build


@dataclass
class BuildReport:
    """What :func:`build_tasks` wrote."""

    path: str
    n_tasks: int
    n_rows_in: int
    dropped_tasks: int
    num_rows: int
    header: dict[str, Any] = field(default_factory=dict)


def _log_table(log: pa.Table | str | Path, spec: TaskSpec) -> pa.Table:
    if isinstance(log, (str, Path)):
        p = Path(log)
        if not p.exists():
            raise MetaIOError(f"{p}: no such log file or directory")
        try:
            log = pq.read_table(p, columns=spec.columns())
        except (pa.ArrowInvalid, OSError) as e:
            raise MetaIOError(f"{p}: cannot read the log as parquet ({e})") from e
    missing = [c for c in spec.columns() if c not in log.column_names]
    if missing:
        raise MetaIOError(f"the log lacks columns {missing}; it has {log.column_names}")
    return log


def _encode(log: pa.Table, spec: TaskSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global row ids ``[n, F]``, dense ``[n, Dd]`` float32, labels ``[n]`` int8."""
    n = log.num_rows
    ids = np.empty((n, len(spec.fields)), dtype=np.int64)
    for j, (f, off) in enumerate(zip(spec.fields, spec.offsets, strict=True)):
        col = log.column(f.column)
        if f.hash:
            v = hash_column(col, f.size)
        else:
            if not pa.types.is_integer(col.type):
                raise MetaIOError(
                    f"field {f.column!r} has type {col.type}; unhashed fields must be integers "
                    "(set hash=True for strings)"
                )
            if col.null_count:
                raise MetaIOError(f"field {f.column!r} has {col.null_count} nulls")
            v = np.asarray(col.to_numpy()).astype(np.int64)
            bad = (v < 0) | (v >= f.size)
            if bad.any():
                raise MetaIOError(
                    f"field {f.column!r}: {int(bad.sum())} values outside [0, {f.size}) "
                    f"(e.g. {v[bad][:3].tolist()}); enlarge size or set hash=True"
                )
        ids[:, j] = v + off
    dense = np.empty((n, len(spec.dense_columns)), dtype=np.float32)
    for j, c in enumerate(spec.dense_columns):
        col = log.column(c)
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            raise MetaIOError(f"dense column {c!r} has type {col.type}; it must be numeric")
        dense[:, j] = np.asarray(pc.fill_null(col, 0).to_numpy()).astype(np.float32)
    if not np.isfinite(dense).all():
        raise MetaIOError("dense columns hold non-finite values (NaN/inf)")
    lab = log.column(spec.label_column)
    if lab.null_count:
        raise MetaIOError(f"label column {spec.label_column!r} has nulls")
    labels = np.asarray(lab.to_numpy()).astype(np.int64)
    if not np.isin(labels, (0, 1)).all():
        raise MetaIOError(f"label column {spec.label_column!r} must hold 0/1 only")
    return ids, dense, labels.astype(np.int8)


def _group_codes(log: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """Integer code per row identifying its task (key tuple); codes follow sorted key order."""
    codes = np.zeros(log.num_rows, dtype=np.int64)
    for k in keys:
        col = log.column(k)
        if col.null_count:
            raise MetaIOError(f"task key column {k!r} has {col.null_count} nulls")
        arr = col.combine_chunks()
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            _, inv = np.unique(
                np.asarray(arr.to_pylist(), dtype=object).astype(str), return_inverse=True
            )
        else:
            _, inv = np.unique(np.asarray(arr.to_numpy(zero_copy_only=False)), return_inverse=True)
        codes = codes * (int(inv.max()) + 1 if len(inv) else 1) + inv
    return codes


def _time_values(log: pa.Table, col: str) -> np.ndarray:
    c = log.column(col)
    if c.null_count:
        raise MetaIOError(f"time column {col!r} has {c.null_count} nulls")
    if pa.types.is_timestamp(c.type):
        c = c.cast(pa.int64())
    if not (pa.types.is_integer(c.type) or pa.types.is_floating(c.type)):
        raise MetaIOError(f"time column {col!r} has type {c.type}; need a timestamp or number")
    return np.asarray(c.to_numpy())


def build_tasks(
    log: pa.Table | str | Path,
    out: str | Path,
    spec: TaskSpec,
    *,
    include: dict[str, Sequence[Any]] | None = None,
    row_group_tasks: int = 1024,
    shuffle: bool = True,
) -> BuildReport:
    """Group an interaction log into tasks and write a task-major parquet file (atomically).

    ``log``: a table or a parquet file/directory with the spec's columns. ``include``: keep only
    rows whose column values are listed (e.g. ``{"user_id": warm_users}``). Tasks are written in a
    seeded random order (``shuffle``), so consecutive batches mix users.
    """
    if row_group_tasks < 1:
        raise ValueError("row_group_tasks must be >= 1")
    log = _log_table(log, spec)
    if include:
        for col, values in include.items():
            if col not in log.column_names:
                raise MetaIOError(f"include names column {col!r}, which the log lacks")
            log = log.filter(pc.is_in(log.column(col), pa.array(list(values))))
    n_in = log.num_rows
    ids, dense, labels = _encode(log, spec)
    codes = _group_codes(log, spec.task_keys)
    ts = _time_values(log, spec.time_column)
    rng = np.random.default_rng(spec.seed)
    if spec.split == "time":
        order = np.lexsort((np.arange(n_in), ts, codes))
    else:
        order = np.lexsort((rng.random(n_in), codes))
    sc = codes[order]
    starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]]) if n_in else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, n_in]) if n_in else np.zeros(0, np.int64)
    k, q = spec.k, spec.q
    n_s = np.minimum(k, counts - spec.min_query)
    keep = n_s >= spec.min_support
    n_q = np.minimum(q, counts - np.maximum(n_s, 0))
    keep &= n_q >= spec.min_query
    starts, n_s, n_q = starts[keep], n_s[keep], n_q[keep]
    t = len(starts)
    if t == 0:
        raise MetaIOError(
            f"no task has >= {spec.min_support} support and >= {spec.min_query} query rows "
            f"(log rows: {n_in}); lower k/min_support or check task_keys"
        )
    task_order = rng.permutation(t) if shuffle else np.arange(t)
    starts, n_s, n_q = starts[task_order], n_s[task_order], n_q[task_order]

    def rows_of(first: np.ndarray, n: np.ndarray, width: int) -> np.ndarray:
        j = np.arange(width)
        j = np.where(j[None, :] < n[:, None], j[None, :], 0)  # padding repeats row 0
        return order[first[:, None] + j]

    s_rows = rows_of(starts, n_s, k)
    q_rows = rows_of(starts + n_s, n_q, q)
    f, dd = len(spec.fields), len(spec.dense_columns)
    key_vals = {c: log.column(c).take(pa.array(order[starts])) for c in spec.task_keys}

    def fsl(values: np.ndarray, width: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)

    cols: dict[str, pa.Array] = {"task_id": pa.array(np.arange(t, dtype=np.int64))}
    for c, v in key_vals.items():
        cols[f"key_{c}"] = v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
    cols["n_support"] = pa.array(n_s.astype(np.int32))
    cols["n_query"] = pa.array(n_q.astype(np.int32))
    for p, rows, width in (("s", s_rows, k), ("q", q_rows, q)):
        cols[f"{p}_sparse"] = fsl(ids[rows], width * f)
        cols[f"{p}_dense"] = fsl(dense[rows], width * dd)
        cols[f"{p}_label"] = fsl(labels[rows], width)
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "k": k,
        "q": q,
        "num_fields": f,
        "num_dense": dd,
        "num_rows": spec.num_rows,
        "n_tasks": t,
        "fields": [asdict(x) for x in spec.fields],
        "offsets": spec.offsets,
        "dense_columns": list(spec.dense_columns),
        "task_keys": list(spec.task_keys),
        "split": spec.split,
        "min_support": spec.min_support,
        "min_query": spec.min_query,
        "seed": spec.seed,
    }
    table = pa.table(cols)
    table = table.replace_schema_metadata({META_KEY: json.dumps(header).encode()})
    out = Path(out)
    with (
        atomic_write(out) as fh,
        pq.ParquetWriter(fh, table.schema, compression="zstd", write_page_checksum=True) as w,
    ):
        for a in range(0, t, row_group_tasks):
            w.write_table(table.slice(a, row_group_tasks), row_group_size=row_group_tasks)
    return BuildReport(
        path=str(out),
        n_tasks=t,
        n_rows_in=n_in,
        dropped_tasks=int((~keep).sum()),
        num_rows=spec.num_rows,
        header=header,
    )


# --------------------------------------------------------------------------- read


def _open(path: str | Path) -> tuple[pq.ParquetFile, dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise MetaIOError(f"{p}: no such task file (build one with `python -m gmeta build-tasks`)")
    try:
        pf = pq.ParquetFile(p, page_checksum_verification=True)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise MetaIOError(f"{p}: not a readable parquet file ({e}); rebuild it") from e
    meta = pf.schema_arrow.metadata or {}
    if META_KEY not in meta:
        raise MetaIOError(f"{p}: parquet file without a gmeta header: not a gmeta task file")
    try:
        header = json.loads(meta[META_KEY])
    except ValueError as e:
        raise MetaIOError(f"{p}: unreadable gmeta header ({e})") from e
    if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
        raise MetaIOError(
            f"{p}: task file format {header.get('format')!r} v{header.get('version')}, this "
            f"gmeta reads {FORMAT!r} v{FORMAT_VERSION}"
        )
    if pf.metadata.num_rows != header["n_tasks"]:
        raise MetaIOError(
            f"{p}: header says {header['n_tasks']} tasks, the file holds {pf.metadata.num_rows}"
        )
    need = ["task_id", "n_support", "n_query"] + [
        f"{s}_{x}" for s in "sq" for x in ("sparse", "dense", "label")
    ]
    missing = [c for c in need if c not in pf.schema_arrow.names]
    if missing:
        raise MetaIOError(f"{p}: task file lacks columns {missing}")
    return pf, header


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a task file (shapes, fields, table size); validates the file's frame."""
    return _open(path)[1]


def _fsl_numpy(col: pa.ChunkedArray, width: int, dtype: Any, name: str) -> np.ndarray:
    arr = col.combine_chunks()
    if not pa.types.is_fixed_size_list(arr.type) or arr.type.list_size != width:
        raise MetaIOError(f"column {name!r} has type {arr.type}, expected fixed lists of {width}")
    if arr.null_count:
        raise MetaIOError(f"column {name!r} has null tasks")
    vals = arr.values
    if arr.offset:
        vals = vals.slice(arr.offset * width, len(arr) * width)
    out = np.asarray(vals.to_numpy(zero_copy_only=False)).astype(dtype, copy=False)
    if not out.flags.writeable:
        out = out.copy()
    return out.reshape(len(arr), width)


def decode(table: pa.Table, header: dict[str, Any], *, source: str = "task file") -> TaskBatch:
    """A decoded, validated :class:`TaskBatch` from task-major rows."""
    k, q, f, dd = header["k"], header["q"], header["num_fields"], header["num_dense"]
    t = table.num_rows
    out: dict[str, torch.Tensor] = {}
    ns = np.asarray(table.column("n_support").to_numpy()).astype(np.int64)
    nq = np.asarray(table.column("n_query").to_numpy()).astype(np.int64)
    if t and (ns.min() < 1 or ns.max() > k or nq.min() < 1 or nq.max() > q):
        raise MetaIOError(f"{source}: set sizes outside [1, K={k}] / [1, Q={q}]")
    for p, n_valid, width in (("s", ns, k), ("q", nq, q)):
        sp = _fsl_numpy(table.column(f"{p}_sparse"), width * f, np.int64, f"{p}_sparse")
        de = _fsl_numpy(table.column(f"{p}_dense"), width * dd, np.float32, f"{p}_dense")
        la = _fsl_numpy(table.column(f"{p}_label"), width, np.int8, f"{p}_label")
        if sp.size and (sp.min() < 0 or sp.max() >= header["num_rows"]):
            raise MetaIOError(
                f"{source}: sparse ids outside the table [0, {header['num_rows']}): corrupt file"
            )
        if la.size and ((la < 0) | (la > 1)).any():
            raise MetaIOError(f"{source}: labels outside {{0, 1}}: corrupt file")
        if not np.isfinite(de).all():
            raise MetaIOError(f"{source}: non-finite dense features: corrupt file")
        out[f"{p}_sparse"] = torch.from_numpy(sp.reshape(t, width, f))
        out[f"{p}_dense"] = torch.from_numpy(de.reshape(t, width, dd))
        out[f"{p}_label"] = torch.from_numpy(la.astype(np.float32))
        out[f"{p}_mask"] = torch.arange(width)[None, :] < torch.from_numpy(n_valid)[:, None]
    tid = torch.from_numpy(np.array(table.column("task_id").to_numpy(), dtype=np.int64))
    return TaskBatch(task_id=tid, **out)


class MetaIOLoader:
    """Stream this rank's share of each global batch of ``tasks_per_batch`` tasks.

    Yields one :class:`TaskBatch` per global batch (possibly empty on some ranks) for ``epochs``
    passes over the file (``None``: forever), starting at global batch ``start_batch`` (resume).
    Every rank yields the same number of batches. ``drop_last`` drops a final short batch.
    ``prefetch`` batches are read ahead on a background thread (0: synchronous).
    """

    def __init__(
        self,
        path: str | Path,
        tasks_per_batch: int,
        *,
        rank: int = 0,
        world: int = 1,
        prefetch: int = 2,
        drop_last: bool = False,
        epochs: int | None = 1,
        start_batch: int = 0,
    ) -> None:
        if tasks_per_batch < 1:
            raise ValueError(f"tasks_per_batch must be >= 1, got {tasks_per_batch}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside [0, world={world})")
        if prefetch < 0 or start_batch < 0 or (epochs is not None and epochs < 1):
            raise ValueError("prefetch and start_batch must be >= 0, epochs >= 1 or None")
        self.path = Path(path)
        self.pf, self.header = _open(self.path)
        self.b, self.rank, self.world = tasks_per_batch, rank, world
        self.prefetch, self.drop_last, self.epochs = prefetch, drop_last, epochs
        self.start_batch = start_batch
        self.n_tasks = int(self.header["n_tasks"])
        full, rest = divmod(self.n_tasks, self.b)
        self.batches_per_epoch = full + (1 if rest and not drop_last else 0)
        if self.batches_per_epoch == 0:
            raise MetaIOError(
                f"{self.path}: {self.n_tasks} tasks make no full batch of {self.b} (drop_last)"
            )
        rg = self.pf.metadata
        sizes = [rg.row_group(i).num_rows for i in range(rg.num_row_groups)]
        self._rg_start = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def total_batches(self) -> int | None:
        if self.epochs is None:
            return None
        return self.epochs * self.batches_per_epoch

    def shares(self, batch_index: int) -> tuple[int, int]:
        """Task range ``[a, b)`` of the file this rank takes in global batch ``batch_index``
        (index within an epoch)."""
        a = batch_index * self.b
        n = min(self.b, self.n_tasks - a)
        s, e = split_counts(n, self.world)[self.rank]
        return a + s, a + e

    def _read_range(self, a: int, b: int, cache: dict[int, pa.Table]) -> pa.Table:
        if a >= b:
            return None  # type: ignore[return-value]
        first = int(np.searchsorted(self._rg_start, a, side="right") - 1)
        last = int(np.searchsorted(self._rg_start, b - 1, side="right") - 1)
        parts = []
        for g in range(first, last + 1):
            if g not in cache:
                for old in [x for x in cache if x < first]:
                    del cache[old]
                try:
                    cache[g] = self.pf.read_row_group(g)
                except (pa.ArrowException, OSError) as e:
                    raise MetaIOError(
                        f"{self.path}: row group {g} is corrupt or unreadable ({e}); rebuild "
                        "the task file"
                    ) from e
            lo = max(a, int(self._rg_start[g])) - int(self._rg_start[g])
            hi = min(b, int(self._rg_start[g + 1])) - int(self._rg_start[g])
            parts.append(cache[g].slice(lo, hi - lo))
        return pa.concat_tables(parts)

    def _generate(self) -> Iterator[TaskBatch]:
        cache: dict[int, pa.Table] = {}
        empty = None
        i = self.start_batch
        total = self.total_batches
        while total is None or i < total:
            _e, j = divmod(i, self.batches_per_epoch)
            if j == 0:
                cache.clear()
            a, b = self.shares(j)
            if a < b:
                tb = decode(self._read_range(a, b, cache), self.header, source=str(self.path))
            else:
                if empty is None:
                    empty = decode(self.pf.schema_arrow.empty_table(), self.header)
                tb = empty
            yield tb
            i += 1

    def __iter__(self) -> Iterator[TaskBatch]:
        if self.prefetch == 0:
            yield from self._generate()
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def work() -> None:
            try:
                for tb in self._generate():
                    while not stop.is_set():
                        try:
                            q.put(tb, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(done)
            except BaseException as e:  # delivered to the consumer
                q.put(e)

        th = threading.Thread(target=work, name="gmeta-metaio-prefetch", daemon=True)
        th.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while th.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    th.join(timeout=0.05)


# --------------------------------------------------------------------------- baseline


class NaiveTaskLoader:
    """The baseline Meta-IO replaces: a flat interaction log regrouped per task with pandas.

    Reads the flat parquet log into a DataFrame, then for every task of a batch selects its rows
    (``groupby(...).get_group``), sorts them by time, splits support/query and encodes them: one
    Python iteration per task, as an ordinary (sample-oriented) pipeline does. Yields the same
    :class:`TaskBatch` as :class:`MetaIOLoader` for the same task order (time split only).
    """

    def __init__(
        self,
        log: str | Path | pa.Table,
        spec: TaskSpec,
        tasks_per_batch: int,
        *,
        task_order: Sequence[tuple] | None = None,
    ) -> None:
        import pandas as pd

        if spec.split != "time":
            raise ValueError("NaiveTaskLoader implements the time split only")
        table = _log_table(log, spec)
        self.df = table.to_pandas()
        self.df["__row"] = np.arange(len(self.df))
        self.spec, self.b = spec, tasks_per_batch
        self.groups = self.df.groupby(list(spec.task_keys), sort=True)
        self.task_order = (
            None
            if task_order is None
            else [k if isinstance(k, tuple) else (k,) for k in task_order]
        )
        self._pd = pd

    def _groups(self) -> Iterator[Any]:
        if self.task_order is None:  # one pass over the groupby, in key order
            for _, g in self.groups:
                yield g
        else:
            for key in self.task_order:
                yield self.groups.get_group(tuple(key))

    def _task(self, g: Any) -> dict[str, np.ndarray] | None:
        spec = self.spec
        g = g.sort_values([spec.time_column, "__row"], kind="stable")
        n = len(g)
        n_s = min(spec.k, n - spec.min_query)
        if n_s < spec.min_support:
            return None
        n_q = min(spec.q, n - n_s)
        ids = np.empty((n, len(spec.fields)), dtype=np.int64)
        for j, (f, off) in enumerate(zip(spec.fields, spec.offsets, strict=True)):
            v = g[f.column].to_numpy()
            ids[:, j] = (hash_column(pa.array(v), f.size) if f.hash else v.astype(np.int64)) + off
        dense = g[list(spec.dense_columns)].to_numpy(np.float32)
        labels = g[spec.label_column].to_numpy().astype(np.float32)
        out: dict[str, np.ndarray] = {}
        for p, lo, cnt, width in (("s", 0, n_s, spec.k), ("q", n_s, n_q, spec.q)):
            j = np.arange(width)
            j = lo + np.where(j < cnt, j, 0)
            out[f"{p}_sparse"] = ids[j]
            out[f"{p}_dense"] = dense[j]
            out[f"{p}_label"] = labels[j]
            out[f"{p}_mask"] = np.arange(width) < cnt
        return out

    def __iter__(self) -> Iterator[TaskBatch]:
        buf: list[dict[str, np.ndarray]] = []
        tid = 0
        for g in self._groups():
            t = self._task(g)
            if t is None:
                continue
            t["task_id"] = np.int64(tid)
            tid += 1
            buf.append(t)
            if len(buf) == self.b:
                yield self._stack(buf)
                buf = []
        if buf:
            yield self._stack(buf)

    @staticmethod
    def _stack(buf: list[dict[str, np.ndarray]]) -> TaskBatch:
        return TaskBatch(**{k: torch.from_numpy(np.stack([t[k] for t in buf])) for k in buf[0]})
