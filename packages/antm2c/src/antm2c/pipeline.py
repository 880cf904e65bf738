"""Streaming preparation: raw AntM2C CSV parts -> parquet partitioned by split and scene.

One pass, constant memory (bounded by the CSV block size and the per-partition row-group
buffer, never by the input size):

1. each part is read with :func:`pyarrow.csv.open_csv` (all columns as strings, so no value is
   coerced by the parser) after its header is checked against :data:`~antm2c.schema.RAW_COLUMNS`;
2. every batch is validated column-wise (vectorised): non-empty ids, ``log_time`` in one of
   :data:`~antm2c.schema.TIME_FORMATS`, ``label`` in {0, 1}, ``scene`` in 0..4, numeric deep
   features parse as floats. Rows with the wrong column count are caught by the CSV reader.
   Malformed rows are counted and reported with file and line number, then either quarantined
   (``quarantine/malformed.csv``) or the run stops (``on_malformed="error"``). Nothing is
   silently repaired: a bad time never becomes a default date;
3. ids, categorical codes and text tokens become signed 64-bit blake2b keys (hashing the unique
   strings of each batch only), text is split into tokens (entity separator for the entity
   sequences, whitespace for titles) and truncated to ``max_tokens``;
4. rows get a split by explicit time cutoffs (half-open ``[.., c1)``, ``[c1, c2)``,
   ``[c2, ..)``; the default cutoffs are the *community* split, not an official one) and are
   appended to ``split=<s>/scene=<k>/part-NNNNN.parquet``. Every parquet file is written
   atomically (temp file in the same directory, fsync, rename); ``manifest.json`` is written
   last and marks the data set complete.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import io
import json
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from shared import atomic_write_text

from .hashing import key64, key64_columns, tokens
from .schema import (
    DEEP_FEATURES,
    ITEM_TEXT,
    LABEL,
    N_SCENES,
    RAW_COLUMNS,
    SCENE,
    TEXT_COLUMNS,
    TIME,
    TIME_FORMATS,
    DeepFeatureTypes,
    SchemaError,
    processed_schema,
    validate_header,
)
from .writers import SPLITS, MalformedRowError, PartitionWriter, Quarantine, prefetch

__all__ = [
    "COMMUNITY_CUTOFFS",
    "SPLITS",
    "MalformedRowError",
    "PrepareConfig",
    "PrepareInterrupted",
    "PrepareReport",
    "key64",
    "prepare",
    "read_manifest",
    "split_files",
]

#: Midnight cutoffs used by public AntM2C loaders (train < 08-03, val < 08-05, test after).
#: There is no official split; record the cutoffs you use.
COMMUNITY_CUTOFFS = ("2023-08-03 00:00:00", "2023-08-05 00:00:00")
MANIFEST = "manifest.json"
_FLOAT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass(frozen=True)
class PrepareConfig:
    """Options of :func:`prepare`; validated on construction."""

    cutoffs: tuple[str, str] = COMMUNITY_CUTOFFS
    on_malformed: str = "quarantine"
    max_malformed_fraction: float = 0.05
    entity_sep: str = ","
    max_tokens: int = 32
    lowercase: bool = True
    block_size: int = 512 << 10
    batch_rows: int = 16_384
    row_group_rows: int = 16_384
    max_buffered_rows: int = 32_768
    background_io: bool = True
    rows_per_file: int = 2_000_000
    deep: DeepFeatureTypes = field(default_factory=DeepFeatureTypes)
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.on_malformed not in ("quarantine", "error"):
            raise ValueError(
                f"on_malformed must be 'quarantine' or 'error', got {self.on_malformed!r}"
            )
        if not 0 <= self.max_malformed_fraction <= 1:
            raise ValueError("max_malformed_fraction must be in [0, 1]")
        if len(self.cutoffs) != 2:
            raise ValueError(f"cutoffs needs two timestamps, got {self.cutoffs!r}")
        c1, c2 = (parse_cutoff(c) for c in self.cutoffs)
        if not c1 < c2:
            raise ValueError(f"cutoffs must be increasing, got {self.cutoffs!r}")
        if len(self.entity_sep) != 1:
            raise ValueError(f"entity_sep must be one character, got {self.entity_sep!r}")
        for name in (
            "max_tokens",
            "block_size",
            "row_group_rows",
            "max_buffered_rows",
            "rows_per_file",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")


def _coalesce(blocks: Iterable[pa.RecordBatch], min_rows: int) -> Iterable[pa.Table]:
    """Group parsed CSV blocks into tables of at least ``min_rows`` rows.

    Arrow's streaming CSV reader reads a fixed number of blocks ahead, so its memory scales with
    ``block_size``; small blocks keep that window small while the per-batch compute overhead is
    paid once per ``min_rows`` rows. When the reader fails, the blocks it delivered before the
    failure are yielded first, so the caller knows exactly how far the file was read."""
    buf: list[pa.RecordBatch] = []
    n = 0
    it = iter(blocks)
    while True:
        try:
            rb = next(it)
        except StopIteration:
            break
        except Exception:
            if buf:
                yield pa.Table.from_batches(buf)
            raise
        buf.append(rb)
        n += rb.num_rows
        if n >= min_rows:
            yield pa.Table.from_batches(buf)
            buf, n = [], 0
    if buf:
        yield pa.Table.from_batches(buf)


def parse_cutoff(s: str) -> dt.datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(str(s).strip(), fmt)
        except ValueError:
            continue
    raise ValueError(f"cutoff {s!r} is not a date like 2023-08-03 or 2023-08-03 00:00:00")


@dataclass
class PrepareReport:
    """What one :func:`prepare` run did."""

    out_dir: Path
    rows_read: int = 0
    rows_written: int = 0
    malformed: int = 0
    malformed_examples: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else float("nan")


def _is_gzip(path: Path) -> bool:
    return path.name.endswith(".gz")


def _read_header(path: Path) -> list[str]:
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as f:
            first = f.readline()
    except (OSError, EOFError) as e:  # e.g. a truncated or non-gzip .gz file
        raise SchemaError(f"{path}: cannot read the header ({e})") from e
    if not first:
        raise SchemaError(f"{path}: file is empty (expected a header row)")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SchemaError(f"{path}: header is not UTF-8 ({e})") from e
    return next(csv.reader([text]))


def _row_text(table: pa.Table, rows: np.ndarray) -> list[str]:
    """The quarantined rows as CSV text (invalid UTF-8 bytes shown as U+FFFD)."""
    sub = table.take(pa.array(rows)).to_pydict()
    cols = list(sub)
    out = []
    for i in range(len(rows)):
        vals = [sub[c][i] for c in cols]
        vals = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in vals]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(vals)
        out.append(buf.getvalue())
    return out


def _to_utf8(batch: pa.Table) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Binary CSV columns -> UTF-8 strings. A column that fails validation is decoded per value
    (only then): the rows holding invalid bytes are returned as ``{reason: mask}`` and their
    values replaced by "" (they are quarantined, never written)."""
    cols, reasons = [], {}
    for name in batch.column_names:
        col = batch[name]
        try:
            cols.append(col.cast(pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        vals = col.to_pylist()
        bad = np.zeros(len(vals), bool)
        for i, v in enumerate(vals):
            try:
                vals[i] = v.decode("utf-8")
            except UnicodeDecodeError:
                bad[i], vals[i] = True, ""
        reasons[f"invalid UTF-8 in {name}"] = bad
        cols.append(pa.chunked_array([pa.array(vals, pa.string())]))
    return pa.table(cols, names=batch.column_names), reasons


def _newlines(batch: pa.Table) -> int:
    """Line breaks inside the values of a batch (multi-line quoted fields), counted on the
    columns' data buffers (no per-row work)."""
    total = 0
    for col in batch.columns:
        for a in col.chunks:
            if len(a) == 0:
                continue
            off = np.frombuffer(a.buffers()[1], np.int32, len(a) + 1, a.offset * 4)
            data = a.buffers()[2]
            if data is None:
                continue
            total += int(np.count_nonzero(np.frombuffer(data, np.uint8)[off[0] : off[-1]] == 10))
    return total


def _row_newlines(batch: pa.Table) -> np.ndarray:
    """Line breaks inside each row's values (only computed when a batch has any)."""
    n = np.zeros(batch.num_rows, np.int64)
    for col in batch.columns:
        n += pc.count_substring(col, "\n").to_numpy(zero_copy_only=False).astype(np.int64)
    return n


def _is_bad_float(col: pa.Array) -> pa.Array:
    ok = pc.or_(
        pc.match_substring_regex(col, _FLOAT),
        pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0),
    )
    return pc.invert(ok)


def _cast_or_none(col: pa.Array, typ: pa.DataType) -> pa.Array | None:
    try:
        return pc.cast(col, typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _validate(
    batch: pa.Table, cfg: PrepareConfig
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, pa.Array]]:
    """Vectorised checks. Returns (bad mask, {reason: mask}, {column: parsed values}).

    Each column is first converted whole (the common, clean case); only when that fails are the
    offending rows located, so clean data pays for one conversion per column.
    """
    n = batch.num_rows
    reasons: dict[str, np.ndarray] = {}
    parsed: dict[str, pa.Array] = {}

    def mark(name: str, mask: pa.Array) -> None:
        m = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
        if m.any():
            reasons[name] = m

    for c in ("user_id", "item_id"):
        col = batch[c].combine_chunks()
        mark(f"empty {c}", pc.equal(pc.utf8_length(col), 0))
        parsed[c] = col
    raw_t = batch[TIME].combine_chunks()
    ts = None
    # fast path: the release's format is fixed-width ISO-like "YYYY-MM-DD HH:MM:SS"; Arrow's
    # ISO-8601 cast parses it vectorised. It is only taken when every value has that exact
    # shape (length 19, space at position 10); anything else goes through strptime per format.
    if (
        len(raw_t)
        and pc.all(pc.equal(pc.utf8_length(raw_t), 19)).as_py()
        and pc.all(pc.equal(pc.utf8_slice_codeunits(raw_t, 10, 11), " ")).as_py()
    ):
        ts = _cast_or_none(raw_t, pa.timestamp("s"))
    if ts is None:
        for fmt in TIME_FORMATS:
            p = pc.strptime(raw_t, format=fmt, unit="s", error_is_null=True)
            ts = p if ts is None else pc.coalesce(ts, p)
            if ts.null_count == 0:
                break
    mark(f"log_time not in formats {list(TIME_FORMATS)}", pc.is_null(ts))
    parsed[TIME] = ts
    for c, allowed in ((LABEL, ("0", "1")), (SCENE, tuple(str(i) for i in range(N_SCENES)))):
        col = batch[c].combine_chunks()
        v = _cast_or_none(col, pa.int8())
        if (
            v is None
            or not pc.all(pc.is_in(v, pa.array([int(a) for a in allowed], pa.int8()))).as_py()
        ):
            trimmed = pc.utf8_trim_whitespace(col)
            bad = pc.invert(pc.is_in(trimmed, pa.array(list(allowed))))
            mark(f"{c} not in {{{','.join(allowed)}}}", bad)
            v = pc.cast(pc.if_else(bad, pa.scalar("0"), trimmed), pa.int8())
        parsed[c] = v
    for c in cfg.deep.numeric_columns:
        col = batch[c].combine_chunks()
        v = _cast_or_none(col, pa.float32())  # fast path: every value parses
        if v is None:
            empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)
            col = pc.if_else(empty, pa.scalar(None, pa.string()), col)  # empty -> missing
            v = _cast_or_none(col, pa.float32())
            if v is None:
                bad = _is_bad_float(col.fill_null(""))
                mark(f"{c} not a number", bad)
                v = pc.cast(pc.if_else(bad, pa.scalar(None, pa.string()), col), pa.float32())
        parsed[c] = v
    bad = np.zeros(n, bool)
    for m in reasons.values():
        bad |= m
    return bad, reasons, parsed


def _encode(
    batch: pa.Table,
    parsed: dict[str, pa.Array],
    rows: np.ndarray,
    cfg: PrepareConfig,
    schema: pa.Schema,
) -> pa.Table:
    """64-bit keys for ids and categorical codes, token-key lists for text, parsed values for
    time, label, scene and numeric features.

    (Encoding the columns on two extra threads was measured on two pinned cores: +8 %
    throughput but +14 % peak RSS for a 10x input, so it is not done.)"""
    cols: dict[str, pa.Array] = {
        "row": pa.array(rows, pa.int64()),
        "user_id": pa.array(key64(parsed["user_id"]), pa.int64()),
        "item_id": pa.array(key64(parsed["item_id"]), pa.int64()),
        TIME: parsed[TIME].cast(pa.timestamp("ms")),
        LABEL: parsed[LABEL],
        SCENE: parsed[SCENE],
    }
    for c in TEXT_COLUMNS:
        sep = None if c == ITEM_TEXT[1] else cfg.entity_sep
        cols[c] = tokens(batch[c].combine_chunks(), sep, cfg.max_tokens, cfg.lowercase)
    numeric = set(cfg.deep.numeric_columns)
    cat = [c for c in DEEP_FEATURES if c not in numeric]
    for c, k in zip(cat, key64_columns([batch[c] for c in cat]), strict=True):
        cols[c] = pa.array(k, pa.int64())
    for c in numeric:
        cols[c] = parsed[c]
    return pa.table([cols[f.name] for f in schema], schema=schema)


_PART_RE = re.compile(r"^antm2c_.*part\d+(\.csv)?(\.gz)?$")


def _input_files(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and _PART_RE.match(q.name))
            if not found:
                raise FileNotFoundError(
                    f"{p}: no AntM2C parts (files named antm2c_*part<k>[.csv][.gz]) in this "
                    "directory"
                )
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    if not files:
        raise FileNotFoundError("no input files given")
    return files


class PrepareInterrupted(KeyboardInterrupt):
    """``prepare`` was stopped by SIGINT or SIGTERM; its partial output was removed."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops a prepare as cleanly as Ctrl-C: it raises :class:`PrepareInterrupted` in the
    main thread, so temporary files are removed and no manifest is written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise PrepareInterrupted(f"interrupted by {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


_OUR_FILES = (
    "split=*/scene=*/part-*.parquet",
    "split=*/scene=*/.part-*.parquet.*.tmp",
    "quarantine/malformed.csv",
    "quarantine/.malformed.csv.*.tmp",
    f".{MANIFEST}.*.tmp",
)


def _clear_output(out: Path) -> None:
    """Remove every file a previous (complete, killed or interrupted) prepare may have left, so
    a finished run holds exactly the files of its manifest."""
    for pattern in _OUR_FILES:
        for f in out.glob(pattern):
            f.unlink(missing_ok=True)
    for d in sorted(out.glob("split=*/scene=*")) + sorted(out.glob("split=*")):
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty
    with contextlib.suppress(OSError):
        (out / "quarantine").rmdir()


def _open_input(path: Path) -> tuple[Any, Any]:
    """(raw file, stream): a plain OS file stream, not a memory map (mapped pages of the input
    would count towards RSS and grow it with the file size); ``.gz`` is decompressed streaming."""
    raw = pa.OSFile(str(path), "r")
    return raw, (pa.CompressedInputStream(raw, "gzip") if _is_gzip(path) else raw)


class _Lines:
    """Physical line numbers of one CSV file's records.

    The CSV reader numbers records (1 = header); a quoted value holding line breaks makes a
    record span several physical lines. Records arrive in order, in windows (one batch plus the
    rows the reader skipped up to it); ``extra`` counts line breaks inside all earlier records.
    """

    def __init__(self) -> None:
        self.extra = 0

    def window(
        self, recs: np.ndarray, nls: np.ndarray | None, s_recs: list[int], s_nls: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Physical lines of the valid records ``recs`` (with line breaks ``nls``, None = 0)
        and of the skipped records ``s_recs`` (``s_nls``) of one window; advances ``extra``."""
        if nls is None and not any(s_nls):
            return recs + self.extra, np.asarray(s_recs, np.int64) + self.extra
        nv = np.zeros(len(recs), np.int64) if nls is None else nls
        all_r = np.concatenate([recs, np.asarray(s_recs, np.int64)])
        all_n = np.concatenate([nv, np.asarray(s_nls, np.int64)])
        order = np.argsort(all_r, kind="stable")
        before = np.zeros(len(all_r), np.int64)
        before[order] = np.cumsum(all_n[order]) - all_n[order]
        phys = all_r + self.extra + before
        self.extra += int(all_n.sum())
        return phys[: len(recs)], phys[len(recs) :]


def _prepare_file(
    f: Path,
    cfg: PrepareConfig,
    row_base: int,
    parts: PartitionWriter,
    quarantine: Quarantine,
    report: PrepareReport,
    counts: np.ndarray,
    tmin: np.ndarray,
    tmax: np.ndarray,
    cutoffs: tuple[int, int],
    on_pos: Any,
) -> int:
    """Stream one CSV part into the partition writer; returns the data records read."""
    c1, c2 = cutoffs
    skipped: list[tuple[int, str]] = []

    def on_invalid(r: Any, _sk: list = skipped) -> str:
        _sk.append((r.number, r.text))
        return "skip"

    raw, source = _open_input(f)
    reader = pcsv.open_csv(
        source,
        read_options=pcsv.ReadOptions(
            use_threads=False,
            block_size=cfg.block_size,
            skip_rows=1,
            column_names=list(RAW_COLUMNS),
        ),
        # values may hold quoted line breaks; binary columns so that one row of invalid UTF-8
        # is quarantined instead of failing the whole block
        parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(
            column_types={c: pa.binary() for c in RAW_COLUMNS},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    lines = _Lines()
    parsed = 0  # valid records so far
    reported_skips = 0
    last_line = 1  # physical line of the last record handled (1 = header)
    blocks = prefetch(reader) if cfg.background_io else reader
    try:
        for batch in _coalesce(blocks, cfg.batch_rows):
            n = batch.num_rows
            # record number (header = 1) of each parsed row: skipped rows keep their numbers
            skip_idx = np.array(sorted(s[0] - 2 for s in skipped), np.int64)
            q = np.arange(parsed, parsed + n, dtype=np.int64)
            shift = np.searchsorted(skip_idx - np.arange(len(skip_idx)), q, side="right")
            rec = q + shift  # 0-based data-record index
            last_rec = int(rec[-1]) + 2 if n else None
            k = reported_skips
            while k < len(skipped) and (last_rec is None or skipped[k][0] < last_rec):
                k += 1
            win = skipped[reported_skips:k]
            reported_skips = k
            batch, reasons = _to_utf8(batch)
            bad, more, parsed_cols = _validate(batch, cfg)
            reasons.update(more)
            for m in reasons.values():
                bad |= m
            nl = _newlines(batch)
            phys, s_phys = lines.window(
                rec + 2,
                _row_newlines(batch) if nl else None,
                [s[0] for s in win],
                [s[1].count("\n") for s in win],
            )
            if n:
                last_line = int(phys[-1]) + (int(_row_newlines(batch)[-1]) if nl else 0)
            if len(s_phys):
                last_line = max(last_line, int(s_phys[-1]) + win[-1][1].count("\n"))
            events: list[tuple[int, str, str]] = [
                (int(s_phys[j]), "wrong number of columns", win[j][1]) for j in range(len(win))
            ]
            if bad.any():
                bad_rows = np.flatnonzero(bad)
                texts = _row_text(batch, bad_rows)
                for j, r in enumerate(bad_rows):
                    why = "; ".join(k for k, m in reasons.items() if m[r])
                    events.append((int(phys[r]), why, texts[j]))
            for line, why, text in sorted(events, key=lambda ev: ev[0]):
                quarantine.add(f.name, line, why, text)
            if bad.any():
                keep = pa.array(np.flatnonzero(~bad))
                batch = batch.take(keep)
                parsed_cols = {k: v.take(keep) for k, v in parsed_cols.items()}
                rec_ok = rec[~bad]
            else:
                rec_ok = rec
            parsed += n
            if batch.num_rows:
                _partition(
                    batch, parsed_cols, row_base + rec_ok, cfg, parts, counts, tmin, tmax, c1, c2
                )
                report.rows_written += batch.num_rows
            on_pos(raw.tell())
    except pa.ArrowInvalid as e:
        msg = str(e)
        if "straddl" in msg or "block" in msg:
            raise MalformedRowError(
                f"{f.name}:{last_line + 1}: a row is larger than the CSV block size "
                f"({cfg.block_size:,} bytes), so it cannot be parsed or quarantined; rerun with "
                f"a larger block (CLI: --block-size {4 * cfg.block_size}, "
                f"PrepareConfig.block_size) ({msg})"
            ) from e
        raise MalformedRowError(f"{f.name}: unreadable CSV after line {last_line} ({msg})") from e
    finally:
        source.close()
        if source is not raw:
            raw.close()
    for num, text in skipped[reported_skips:]:
        _, s_phys = lines.window(np.zeros(0, np.int64), None, [num], [text.count("\n")])
        quarantine.add(f.name, int(s_phys[0]), "wrong number of columns", text)
    return parsed + len(skipped)


def _partition(
    batch: pa.Table,
    parsed_cols: dict[str, pa.Array],
    rows: np.ndarray,
    cfg: PrepareConfig,
    parts: PartitionWriter,
    counts: np.ndarray,
    tmin: np.ndarray,
    tmax: np.ndarray,
    c1: int,
    c2: int,
) -> None:
    """Encode one clean batch and hand its (split, scene) groups to the partition writer."""
    schema = parts.schema
    enc = _encode(batch, parsed_cols, rows, cfg, schema)
    t = parsed_cols[TIME].cast(pa.int64()).to_numpy(zero_copy_only=False)
    split = (t >= c1).astype(np.int8) + (t >= c2).astype(np.int8)
    scene = enc.column(SCENE).to_numpy()
    label = enc.column(LABEL).to_numpy()
    key = split.astype(np.int64) * N_SCENES + scene
    order = np.argsort(key, kind="stable")
    ks = key[order]
    bounds = np.flatnonzero(np.diff(ks)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ks)]])
    for s0, e0 in zip(starts, ends, strict=True):
        k = int(ks[s0])
        sel = order[s0:e0]
        sp, sc = divmod(k, N_SCENES)
        parts.add((sp, sc), enc.take(pa.array(sel)))
        counts[sp, sc, 0] += len(sel)
        counts[sp, sc, 1] += int(label[sel].sum())
        tmin[sp] = min(tmin[sp], int(t[sel].min()))
        tmax[sp] = max(tmax[sp], int(t[sel].max()))


def prepare(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    config: PrepareConfig | None = None,
    *,
    progress_bar: bool = True,
) -> PrepareReport:
    """Stream raw CSV parts into ``out_dir`` as parquet partitioned by split and scene.

    ``inputs`` is a directory holding ``antm2c_*part<k>`` files (``.csv`` and ``.csv.gz``), one
    file, or a list of files. Raises :class:`~antm2c.schema.SchemaError` for a wrong header,
    :class:`MalformedRowError` for a bad row with ``on_malformed="error"``, when malformed rows
    exceed ``max_malformed_fraction`` or when a row is larger than ``block_size``,
    ``FileExistsError`` when ``out_dir`` already holds a prepared data set (pass
    ``overwrite=True``), :class:`PrepareInterrupted` on SIGINT/SIGTERM. Whatever stops it, no
    temporary or partial file is left; a rerun leaves exactly the files of its manifest.
    """
    from shared import progress

    cfg = config or PrepareConfig()
    files = _input_files(inputs)
    for f in files:
        validate_header(_read_header(f), source=str(f))
    out = Path(out_dir)
    if (out / MANIFEST).exists():
        if not cfg.overwrite:
            raise FileExistsError(
                f"{out} already holds a prepared data set ({MANIFEST}); use overwrite=True "
                "(CLI: --overwrite) or another --out"
            )
        old = read_manifest(out)
        (out / MANIFEST).unlink()
        for rel in old.get("files", {}):
            (out / rel).unlink(missing_ok=True)
        shutil.rmtree(out / "quarantine", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    _clear_output(out)
    schema = processed_schema(cfg.deep)
    c1, c2 = (np.datetime64(parse_cutoff(c), "s").astype(np.int64) for c in cfg.cutoffs)
    report = PrepareReport(out_dir=out)
    counts = np.zeros((len(SPLITS), N_SCENES, 2), np.int64)
    tmin = np.full(len(SPLITS), np.iinfo(np.int64).max)
    tmax = np.full(len(SPLITS), np.iinfo(np.int64).min)
    total_bytes = sum(f.stat().st_size for f in files)
    # pyarrow imports pandas lazily on its first Python-value conversion (0.5-2 s): a one-off
    # start-up cost, paid here so that ``seconds`` measures the streaming loop
    pa.array([0])
    t0 = time.perf_counter()
    c0 = time.process_time()
    row_base = 0
    with _sigterm_as_interrupt():
        parts = PartitionWriter(out, schema, cfg)
        quarantine = Quarantine(out, cfg)
        bar = progress(
            total=total_bytes,
            desc="prepare",
            unit="B",
            unit_scale=True,
            disable=not progress_bar or None,
        )
        done_bytes = 0
        try:
            for f in files:
                report.rows_read += _prepare_file(
                    f,
                    cfg,
                    row_base,
                    parts,
                    quarantine,
                    report,
                    counts,
                    tmin,
                    tmax,
                    (c1, c2),
                    lambda pos, _b=done_bytes: bar.update(max(0, _b + pos - bar.n)),
                )
                done_bytes += f.stat().st_size
                bar.update(max(0, done_bytes - bar.n))
                row_base = report.rows_read
            total = max(report.rows_read, 1)
            if quarantine.count / total > cfg.max_malformed_fraction:
                raise MalformedRowError(
                    f"{quarantine.count} of {report.rows_read} rows are malformed "
                    f"({quarantine.count / total:.1%} > max_malformed_fraction="
                    f"{cfg.max_malformed_fraction}); first: {quarantine.examples[:3]}"
                )
            parts.close()
            quarantine.close()
            bar.close()
            report.seconds = time.perf_counter() - t0
            report.cpu_seconds = time.process_time() - c0
            report.malformed = quarantine.count
            report.malformed_examples = quarantine.examples
            report.files = [p for p, _ in parts.files]
            report.counts = {
                SPLITS[s]: {
                    str(k): {"rows": int(counts[s, k, 0]), "positives": int(counts[s, k, 1])}
                    for k in range(N_SCENES)
                }
                for s in range(len(SPLITS))
            }

            def ts_str(v: int) -> str | None:
                if v in (np.iinfo(np.int64).max, np.iinfo(np.int64).min):
                    return None
                return str(np.datetime64(int(v), "s")).replace("T", " ")

            manifest = {
                "format": "antm2c-prepared/1",
                "inputs": [{"name": f.name, "bytes": f.stat().st_size} for f in files],
                "cutoffs": list(cfg.cutoffs),
                "split_rule": "train: t < cutoffs[0]; val: cutoffs[0] <= t < cutoffs[1]; test: t >= "
                "cutoffs[1] (community cutoffs are unofficial)",
                "config": {k: v for k, v in asdict(cfg).items() if k != "deep"}
                | {"numeric_deep_features": list(cfg.deep.numeric)},
                "rows_read": report.rows_read,
                "rows_written": report.rows_written,
                "malformed": report.malformed,
                "malformed_examples": report.malformed_examples,
                "counts": report.counts,
                "time_range": {
                    SPLITS[s]: [ts_str(tmin[s]), ts_str(tmax[s])] for s in range(len(SPLITS))
                },
                "files": dict(parts.files),
                "schema": schema.to_string(show_schema_metadata=False),
            }
            # still under the SIGTERM handler: an interruption while the manifest is written
            # removes the finished parts too, so no run is left looking complete but unlisted
            atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        except BaseException as e:
            parts.abort(e)
            quarantine.close(e)
            bar.close()
            (out / MANIFEST).unlink(missing_ok=True)
            _clear_output(out)
            raise
    return report


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a prepared data set; a clear error if it is missing or unreadable."""
    p = Path(root) / MANIFEST
    if not p.is_file():
        raise FileNotFoundError(
            f"{root}: not a prepared AntM2C data set (no {MANIFEST}); run `python -m antm2c "
            "prepare` first"
        )
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SchemaError(f"{p}: unreadable manifest ({e})") from e
    if doc.get("format") != "antm2c-prepared/1":
        raise SchemaError(f"{p}: unknown format {doc.get('format')!r}")
    return doc


def split_files(root: str | Path, split: str, scenes: Iterable[int] | None = None) -> list[Path]:
    """Parquet files of one split (optionally only some scenes), in a stable order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    doc = read_manifest(root)
    want = None if scenes is None else {int(s) for s in scenes}
    out = []
    for rel in sorted(doc["files"]):
        parts = Path(rel).parts
        if parts[0] != f"split={split}":
            continue
        if want is not None and int(parts[1].split("=")[1]) not in want:
            continue
        out.append(Path(root) / rel)
    return out
