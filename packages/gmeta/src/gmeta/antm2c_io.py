"""Read AntM2C-format interaction logs (Alipay's multi-scenario CTR data) into a gmeta log.

Two layouts are accepted, both as written by the AntM2C release and its tooling (gmeta does not
import any AntM2C package; it reads the files):

* **raw**: a directory of CSV parts named ``antm2c_*part<k>[.csv]`` (or one such file) with a
  header row and the release's 38 columns ``user_id, item_id, log_time, label, <5 text
  columns>, scene, deep_features_0 .. deep_features_26``; ``log_time`` as
  ``%Y-%m-%d %H:%M:%S`` (or ``%Y/%m/%d %H:%M``), ids and categorical codes as strings;
* **prepared**: a directory with ``manifest.json`` and parquet files under
  ``split=<s>/scene=<k>/`` whose ids and categorical codes are 64-bit keys, ``log_time`` a
  timestamp, numeric deep features floats.

Either becomes one table with ``user_id, item_id, scene, ts`` (seconds), ``label`` and the chosen
deep features (``cat_<k>`` categorical, ``num_<k>`` numeric, nulls as 0). :func:`antm2c_spec`
turns it into tasks: one per user (``task="user"``) or per user and scenario
(``task="user_scene"``), items and categorical codes hashed into fixed-size fields.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from gmeta.metaio import FieldSpec, MetaIOError, TaskSpec

__all__ = ["DEFAULT_CATEGORICAL", "DEFAULT_NUMERIC", "antm2c_spec", "read_antm2c"]

DEFAULT_CATEGORICAL = (0, 1, 2, 3)
DEFAULT_NUMERIC = (14, 19, 20, 21)
N_SCENES = 5
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M")
_PART = re.compile(r"^antm2c_.*part\d+(\.csv)?$")
_BASE = ("user_id", "item_id", "log_time", "label", "scene")


def _parts(p: Path) -> list[Path]:
    if p.is_file():
        return [p]
    files = sorted(q for q in p.iterdir() if q.is_file() and _PART.match(q.name))
    if not files:
        raise MetaIOError(
            f"{p}: neither a prepared AntM2C directory (manifest.json) nor raw parts "
            "(files named antm2c_*part<k>[.csv])"
        )
    return files


def _parse_time(col: pa.Array, source: str) -> pa.Array:
    out = None
    for fmt in TIME_FORMATS:
        parsed = pc.strptime(col, format=fmt, unit="s", error_is_null=True)
        out = parsed if out is None else pc.coalesce(out, parsed)
    if out.null_count:
        bad = pc.filter(col, pc.is_null(out)).to_pylist()[:3]
        raise MetaIOError(
            f"{source}: {out.null_count} log_time values in no known format, e.g. {bad}"
        )
    return out.cast(pa.int64())


def _read_raw(files: list[Path], cat: Sequence[int], num: Sequence[int]) -> pa.Table:
    want = list(_BASE) + [f"deep_features_{i}" for i in (*cat, *num)]
    tables = []
    for f in files:
        try:
            with open(f, encoding="utf-8", newline="") as fh:
                header = [h.strip() for h in next(csv.reader(fh), [])]
        except (OSError, UnicodeDecodeError) as e:
            raise MetaIOError(f"{f}: unreadable ({e})") from e
        missing = [c for c in want if c not in header]
        if missing:
            raise MetaIOError(f"{f}: not an AntM2C part: header lacks {missing}")
        try:
            t = pcsv.read_csv(
                f,
                convert_options=pcsv.ConvertOptions(
                    include_columns=want,
                    column_types={c: pa.string() for c in want},
                    strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, OSError) as e:
            raise MetaIOError(f"{f}: cannot parse as CSV ({e})") from e
        try:
            label = pc.cast(t["label"], pa.int8())
            scene = pc.cast(t["scene"], pa.int8())
        except pa.ArrowInvalid as e:
            raise MetaIOError(f"{f}: label/scene must be integers ({e})") from e
        cols = {
            "user_id": t["user_id"],
            "item_id": t["item_id"],
            "scene": scene,
            "ts": _parse_time(t["log_time"].combine_chunks(), str(f)),
            "label": label,
        }
        for i in cat:
            cols[f"cat_{i}"] = t[f"deep_features_{i}"]
        for i in num:
            c = t[f"deep_features_{i}"]
            c = pc.if_else(pc.equal(c, ""), pa.scalar(None, pa.string()), c)
            try:
                cols[f"num_{i}"] = pc.fill_null(pc.cast(c, pa.float32()), 0.0)
            except pa.ArrowInvalid as e:
                raise MetaIOError(f"{f}: deep_features_{i} is not numeric ({e})") from e
        tables.append(pa.table(cols))
    return pa.concat_tables(tables)


def _read_prepared(root: Path, cat: Sequence[int], num: Sequence[int]) -> pa.Table:
    files = sorted(root.glob("split=*/scene=*/*.parquet"))
    if not files:
        raise MetaIOError(f"{root}: manifest.json but no split=*/scene=*/*.parquet files")
    want = list(_BASE) + [f"deep_features_{i}" for i in (*cat, *num)]
    tables = []
    for f in files:
        try:
            t = pq.read_table(f, columns=want)
        except (pa.ArrowInvalid, OSError, KeyError) as e:
            raise MetaIOError(f"{f}: not a prepared AntM2C parquet file ({e})") from e
        cols = {
            "user_id": t["user_id"],
            "item_id": t["item_id"],
            "scene": t["scene"],
            "ts": pc.cast(pc.cast(t["log_time"], pa.timestamp("s")), pa.int64()),
            "label": t["label"],
        }
        for i in cat:
            cols[f"cat_{i}"] = pc.fill_null(t[f"deep_features_{i}"], 0)
        for i in num:
            cols[f"num_{i}"] = pc.fill_null(pc.cast(t[f"deep_features_{i}"], pa.float32()), 0.0)
        tables.append(pa.table(cols))
    return pa.concat_tables(tables)


def read_antm2c(
    path: str | Path,
    *,
    categorical: Sequence[int] = DEFAULT_CATEGORICAL,
    numeric: Sequence[int] = DEFAULT_NUMERIC,
) -> pa.Table:
    """An AntM2C log (raw CSV parts or a prepared directory) as one gmeta interaction table."""
    for i in (*categorical, *numeric):
        if not 0 <= int(i) <= 26:
            raise ValueError(f"deep feature index {i} outside 0..26")
    if not numeric:
        raise ValueError("at least one numeric deep feature is needed (the dense input)")
    p = Path(path)
    if not p.exists():
        raise MetaIOError(f"{p}: no such file or directory")
    if p.is_dir() and (p / "manifest.json").is_file():
        t = _read_prepared(p, categorical, numeric)
    else:
        t = _read_raw(_parts(p), categorical, numeric)
    scene = t["scene"]
    if len(scene) and (pc.min(scene).as_py() < 0 or pc.max(scene).as_py() >= N_SCENES):
        raise MetaIOError(f"{p}: scene values outside 0..{N_SCENES - 1}")
    return t


def antm2c_spec(
    table: pa.Table,
    *,
    k: int = 5,
    q: int = 5,
    task: str = "user",
    item_buckets: int = 4096,
    code_buckets: int = 512,
    min_support: int | None = None,
    min_query: int = 1,
    split: str = "time",
    seed: int = 0,
) -> TaskSpec:
    """The :class:`TaskSpec` of an AntM2C table from :func:`read_antm2c`."""
    if task not in ("user", "user_scene"):
        raise ValueError(f"task must be 'user' or 'user_scene', got {task!r}")
    cats = [c for c in table.column_names if c.startswith("cat_")]
    nums = [c for c in table.column_names if c.startswith("num_")]
    fields = [FieldSpec("item_id", item_buckets, hash=True), FieldSpec("scene", N_SCENES)]
    fields += [FieldSpec(c, code_buckets, hash=True) for c in cats]
    return TaskSpec(
        fields=tuple(fields),
        dense_columns=tuple(nums),
        k=k,
        q=q,
        task_keys=("user_id",) if task == "user" else ("user_id", "scene"),
        time_column="ts",
        label_column="label",
        min_support=min_support,
        min_query=min_query,
        split=split,
        seed=seed,
    )
