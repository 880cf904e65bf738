"""Loaders from the public formats into the canonical tables of :mod:`llmrec.schema` (§4.1.1).

* Amazon Review 2018 (McAuley lab, nijianmo): ratings-only CSV ``item,user,rating,timestamp`` with
  **no header and the item first**, or the (5-core) review JSON lines (``reviewerID``, ``asin``,
  ``overall``, ``unixReviewTime``); metadata JSON lines (``asin``, ``title``, ...). Plain or gzip.
* Amazon Reviews 2023 (McAuley lab): review JSON lines (``user_id``, ``parent_asin``, ``asin``,
  ``rating``, ``timestamp`` in milliseconds) and metadata JSON lines (``parent_asin``, ``title``,
  ``main_category``, ...). Items are keyed by ``parent_asin`` by default (as the release advises).
* RecBole atomic files: ``<name>.inter`` / ``<name>.item``, tab separated, typed headers
  (``user_id:token``, ``timestamp:float``, ``title:token_seq``); :func:`write_recbole` writes them.
* Generic parquet: an interactions file and an items file with configurable column names.

Every loader returns ``(interactions, items)`` and never downloads anything. A malformed line is
reported with its file and line number.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd

from shared import atomic_write_text

from .schema import DataError, validate_interactions, validate_items

__all__ = [
    "load_amazon2018",
    "load_amazon2023",
    "load_parquet",
    "load_recbole",
    "write_recbole",
]


def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise DataError(f"file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as f:
        try:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not a JSON object ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
                yield n, rec
        except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
            raise DataError(f"{path}: corrupt or truncated file ({e})") from None


def _meta_items(path: Path, key: str, domain: str) -> pd.DataFrame:
    rows = []
    for _n, rec in _json_lines(path):
        if key not in rec:
            continue  # metadata rows without the key carry nothing we can join
        title = rec.get("title")
        rows.append((str(rec[key]), domain, title if isinstance(title, str) else None))
    df = pd.DataFrame(rows, columns=["item", "domain", "title"])
    return validate_items(df.drop_duplicates("item", keep="first"), source=str(path))


def load_amazon2018(
    interactions: str | Path, meta: str | Path, domain: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One Amazon-2018 category: ratings CSV (``item,user,rating,timestamp``, no header) or
    review JSON lines (``.json``/``.json.gz``), plus its ``meta_<Category>.json(.gz)``.

    The format is recognised by content: a first non-empty character ``{`` means JSON lines.
    """
    ipath, mpath = Path(interactions), Path(meta)
    with _open_text(ipath) as f:
        head = f.read(1)
    if head == "{":
        rows = []
        for n, rec in _json_lines(ipath):
            try:
                rows.append(
                    (str(rec["reviewerID"]), str(rec["asin"]), int(rec["unixReviewTime"]), domain)
                )
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(
                    f"{ipath}:{n}: a review needs reviewerID, asin and an integer "
                    f"unixReviewTime ({type(e).__name__}: {e})"
                ) from None
    else:
        rows = []
        with _open_text(ipath) as f:
            for n, rec in enumerate(csv.reader(f), 1):
                if not rec:
                    continue
                if len(rec) != 4:
                    raise DataError(
                        f"{ipath}:{n}: expected 4 fields item,user,rating,timestamp, got {len(rec)}"
                    )
                item, user, _rating, ts = rec
                try:
                    t = int(ts)
                except ValueError:
                    raise DataError(
                        f"{ipath}:{n}: timestamp {ts!r} is not an integer (is the column order "
                        f"item,user,rating,timestamp?)"
                    ) from None
                rows.append((user, item, t, domain))
    inter = pd.DataFrame(rows, columns=["user", "item", "ts", "domain"])
    return validate_interactions(inter, source=str(ipath)), _meta_items(mpath, "asin", domain)


def load_amazon2023(
    reviews: str | Path, meta: str | Path, domain: str, *, item_key: str = "parent_asin"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One Amazon-Reviews-2023 category: ``<Category>.jsonl(.gz)`` and ``meta_<Category>.jsonl``.

    ``timestamp`` is kept in milliseconds (only its order matters). ``item_key`` is
    ``"parent_asin"`` (default, the release's product grouping) or ``"asin"`` (the metadata
    is still joined on ``parent_asin``; use ``asin`` only with a metadata file keyed by it).
    """
    if item_key not in ("parent_asin", "asin"):
        raise ValueError(f"item_key must be 'parent_asin' or 'asin', got {item_key!r}")
    rpath = Path(reviews)
    rows = []
    for n, rec in _json_lines(rpath):
        try:
            rows.append((str(rec["user_id"]), str(rec[item_key]), int(rec["timestamp"]), domain))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{rpath}:{n}: a review needs user_id, {item_key} and an integer timestamp "
                f"({type(e).__name__}: {e})"
            ) from None
    inter = pd.DataFrame(rows, columns=["user", "item", "ts", "domain"])
    key = "parent_asin" if item_key == "parent_asin" else "asin"
    return validate_interactions(inter, source=str(rpath)), _meta_items(Path(meta), key, domain)


def _read_atomic(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"file not found: {path}")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = []
        for h in header:
            name, _, typ = h.partition(":")
            if typ not in ("token", "token_seq", "float", "float_seq"):
                raise DataError(
                    f"{path}: header field {h!r} is not 'name:type' with a RecBole type "
                    f"(token, token_seq, float, float_seq)"
                )
            names.append(name)
        rows = []
        for n, line in enumerate(f, 2):
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != len(names):
                raise DataError(f"{path}:{n}: {len(parts)} fields, header has {len(names)}")
            rows.append(parts)
    return pd.DataFrame(rows, columns=names, dtype=object)


def load_recbole(
    directory: str | Path,
    name: str,
    *,
    domain: str | None = None,
    title_field: str = "title",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RecBole atomic files ``<directory>/<name>.inter`` and ``<name>.item``.

    The domain comes from a ``domain`` field when the files have one, else from ``domain``
    (default: ``name``). Float timestamps must be whole numbers (RecBole writes ``1.5e9`` style).
    """
    d = Path(directory)
    inter = _read_atomic(d / f"{name}.inter")
    items = _read_atomic(d / f"{name}.item")
    for col in ("user_id", "item_id", "timestamp"):
        if col not in inter.columns:
            raise DataError(
                f"{d / (name + '.inter')}: no {col!r} field (has {list(inter.columns)})"
            )
    if "item_id" not in items.columns or title_field not in items.columns:
        raise DataError(
            f"{d / (name + '.item')}: needs 'item_id' and {title_field!r} fields "
            f"(has {list(items.columns)})"
        )
    dom = domain or name
    ts = pd.to_numeric(inter["timestamp"], errors="coerce")
    if ts.isna().any() or (ts != ts.round()).any():
        bad = inter["timestamp"][ts.isna() | (ts != ts.round())].iloc[0]
        raise DataError(f"{d / (name + '.inter')}: timestamp {bad!r} is not a whole number")
    out_i = pd.DataFrame(
        {
            "user": inter["user_id"],
            "item": inter["item_id"],
            "ts": ts.astype("int64"),
            "domain": inter["domain"] if "domain" in inter.columns else dom,
        }
    )
    titles = items[title_field].where(items[title_field].astype(str).str.len() > 0, None)
    out_m = pd.DataFrame(
        {
            "item": items["item_id"],
            "domain": items["domain"] if "domain" in items.columns else dom,
            "title": titles,
        }
    )
    return (
        validate_interactions(out_i, source=str(d / f"{name}.inter")),
        validate_items(out_m, source=str(d / f"{name}.item")),
    )


def _clean_field(x: object) -> str:
    return "" if x is None else str(x).replace("\t", " ").replace("\n", " ")


def write_recbole(
    interactions: pd.DataFrame, items: pd.DataFrame, directory: str | Path, name: str
) -> tuple[Path, Path]:
    """Write canonical tables as RecBole atomic files (atomically), with a ``domain`` field."""
    inter = validate_interactions(interactions)
    its = validate_items(items)
    d = Path(directory)
    lines = ["user_id:token\titem_id:token\ttimestamp:float\tdomain:token"]
    lines += [
        f"{_clean_field(u)}\t{_clean_field(i)}\t{t}\t{_clean_field(dm)}"
        for u, i, t, dm in inter.itertuples(index=False)
    ]
    p_inter = atomic_write_text(d / f"{name}.inter", "\n".join(lines) + "\n")
    lines = ["item_id:token\ttitle:token_seq\tdomain:token"]
    lines += [
        f"{_clean_field(i)}\t{_clean_field(t)}\t{_clean_field(dm)}"
        for i, dm, t in its.itertuples(index=False)
    ]
    p_item = atomic_write_text(d / f"{name}.item", "\n".join(lines) + "\n")
    return p_inter, p_item


def load_parquet(
    interactions: str | Path,
    items: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    domain: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A generic interactions parquet and items parquet.

    ``columns`` maps canonical names (``user``, ``item``, ``ts``, ``domain``, ``title``) to the
    files' column names; ``domain`` fills a missing domain column in both files.
    """
    cmap = {k: k for k in ("user", "item", "ts", "domain", "title")}
    if columns:
        unknown = set(columns) - set(cmap)
        if unknown:
            raise ValueError(f"columns has unknown canonical name(s) {sorted(unknown)}")
        cmap.update(columns)
    frames = []
    for path in (Path(interactions), Path(items)):
        if not path.exists():
            raise DataError(f"file not found: {path}")
        try:
            frames.append(pd.read_parquet(path))
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise DataError(f"{path}: not a readable parquet file ({e})") from None
    inter, its = frames
    inv = {v: k for k, v in cmap.items()}
    inter = inter.rename(columns={c: inv[c] for c in inter.columns if c in inv})
    its = its.rename(columns={c: inv[c] for c in its.columns if c in inv})
    for df in (inter, its):
        if "domain" not in df.columns:
            if domain is None:
                raise DataError(
                    f"no domain column ({cmap['domain']!r}) in the parquet files: pass domain="
                )
            df["domain"] = domain
    return (
        validate_interactions(inter, source=str(interactions)),
        validate_items(its, source=str(items)),
    )
