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

import csv
import datetime as dt
import io
import json
import re
import shutil
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

from .hashing import key64, tokens
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
    paid once per ``min_rows`` rows."""
    buf: list[pa.RecordBatch] = []
    n = 0
    for rb in blocks:
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


def _read_header(path: Path) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline()
    if not first:
        raise SchemaError(f"{path}: file is empty (expected a header row)")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SchemaError(f"{path}: header is not UTF-8 ({e})") from e
    return next(csv.reader([text]))


def _row_text(table: pa.Table, rows: np.ndarray) -> list[str]:
    sub = table.take(pa.array(rows))
    buf = io.BytesIO()
    pcsv.write_csv(
        sub, buf, write_options=pcsv.WriteOptions(include_header=False, quoting_style="needed")
    )
    return buf.getvalue().decode("utf-8").splitlines()


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
    for c in DEEP_FEATURES:
        cols[c] = parsed[c] if c in numeric else pa.array(key64(batch[c]), pa.int64())
    return pa.table([cols[f.name] for f in schema], schema=schema)


def _input_files(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = sorted(
                q
                for q in p.iterdir()
                if q.is_file() and re.match(r"^antm2c_.*part\d+(\.csv)?$", q.name)
            )
            if not found:
                raise FileNotFoundError(
                    f"{p}: no AntM2C parts (files named antm2c_*part<k>[.csv]) in this directory"
                )
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    if not files:
        raise FileNotFoundError("no input files given")
    return files


def prepare(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    config: PrepareConfig | None = None,
    *,
    progress_bar: bool = True,
) -> PrepareReport:
    """Stream raw CSV parts into ``out_dir`` as parquet partitioned by split and scene.

    ``inputs`` is a directory holding ``antm2c_*part<k>`` files, one file, or a list of files.
    Raises :class:`~antm2c.schema.SchemaError` for a wrong header, :class:`MalformedRowError` for
    a bad row with ``on_malformed="error"`` or when malformed rows exceed
    ``max_malformed_fraction``, ``FileExistsError`` when ``out_dir`` already holds a prepared
    data set (pass ``overwrite=True``).
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
    schema = processed_schema(cfg.deep)
    c1, c2 = (np.datetime64(parse_cutoff(c), "s").astype(np.int64) for c in cfg.cutoffs)
    report = PrepareReport(out_dir=out)
    counts = np.zeros((len(SPLITS), N_SCENES, 2), np.int64)
    tmin = np.full(len(SPLITS), np.iinfo(np.int64).max)
    tmax = np.full(len(SPLITS), np.iinfo(np.int64).min)
    parts = PartitionWriter(out, schema, cfg)
    quarantine = Quarantine(out, cfg)
    total_bytes = sum(f.stat().st_size for f in files)
    bar = progress(
        total=total_bytes,
        desc="prepare",
        unit="B",
        unit_scale=True,
        disable=not progress_bar or None,
    )
    t0 = time.perf_counter()
    c0 = time.process_time()
    row_base = 0
    try:
        for f in files:
            skipped: list[tuple[int, str]] = []

            def on_invalid(r: Any, _sk: list = skipped) -> str:
                _sk.append((r.number, r.text))
                return "skip"

            # a plain OS file stream, not a memory map: mapped pages of the input would count
            # towards RSS and grow it with the file size
            source = pa.OSFile(str(f), "r")
            reader = pcsv.open_csv(
                source,
                read_options=pcsv.ReadOptions(
                    use_threads=False,
                    block_size=cfg.block_size,
                    skip_rows=1,
                    column_names=list(RAW_COLUMNS),
                ),
                parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid),
                convert_options=pcsv.ConvertOptions(
                    column_types={c: pa.string() for c in RAW_COLUMNS},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            parsed = 0
            reported_skips = 0
            last_pos = 0
            blocks = prefetch(reader) if cfg.background_io else reader
            for batch in _coalesce(blocks, cfg.batch_rows):
                n = batch.num_rows
                # physical data-row index of each parsed row (skipped rows keep their numbers)
                skip_idx = np.array(sorted(s[0] - 2 for s in skipped), np.int64)
                q = np.arange(parsed, parsed + n, dtype=np.int64)
                shift = np.searchsorted(skip_idx - np.arange(len(skip_idx)), q, side="right")
                phys = q + shift
                # report malformed rows of this block in line order: rows the reader skipped
                # (wrong column count) up to this batch's last line, then value errors
                last_line = int(phys[-1]) + 2 if n else None
                events: list[tuple[int, str, str]] = []
                k = reported_skips
                while k < len(skipped) and (last_line is None or skipped[k][0] < last_line):
                    events.append((skipped[k][0], "wrong number of columns", skipped[k][1]))
                    k += 1
                reported_skips = k
                bad, reasons, parsed_cols = _validate(batch, cfg)
                if bad.any():
                    bad_rows = np.flatnonzero(bad)
                    texts = _row_text(batch, bad_rows)
                    for j, r in enumerate(bad_rows):
                        why = "; ".join(k for k, m in reasons.items() if m[r])
                        events.append((int(phys[r]) + 2, why, texts[j]))
                for line, why, text in sorted(events, key=lambda ev: ev[0]):
                    quarantine.add(f.name, line, why, text)
                if bad.any():
                    keep = pa.array(np.flatnonzero(~bad))
                    batch = batch.take(keep)
                    parsed_cols = {k: v.take(keep) for k, v in parsed_cols.items()}
                    phys_ok = phys[~bad]
                else:
                    phys_ok = phys
                parsed += n
                report.rows_read += n
                if batch.num_rows:
                    enc = _encode(batch, parsed_cols, row_base + phys_ok, cfg, schema)
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
                    report.rows_written += batch.num_rows
                pos = min(int(f.stat().st_size), last_pos + int(batch.nbytes))
                bar.update(max(0, pos - last_pos))
                last_pos = pos
            for num, text in skipped[reported_skips:]:
                quarantine.add(f.name, num, "wrong number of columns", text)
            report.rows_read += len(skipped)
            source.close()
            row_base += parsed + len(skipped)
        total = max(report.rows_read, 1)
        if quarantine.count / total > cfg.max_malformed_fraction:
            raise MalformedRowError(
                f"{quarantine.count} of {report.rows_read} rows are malformed "
                f"({quarantine.count / total:.1%} > max_malformed_fraction="
                f"{cfg.max_malformed_fraction}); first: {quarantine.examples[:3]}"
            )
        parts.close()
        quarantine.close()
    except BaseException as e:
        parts.abort(e)
        quarantine.close(e)
        bar.close()
        raise
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
        "time_range": {SPLITS[s]: [ts_str(tmin[s]), ts_str(tmax[s])] for s in range(len(SPLITS))},
        "files": dict(parts.files),
        "schema": schema.to_string(show_schema_metadata=False),
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
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
