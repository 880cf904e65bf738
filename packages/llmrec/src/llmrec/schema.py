"""Canonical tables every loader produces and the pipeline consumes (§3.1 of the paper).

``interactions``: one row per (user, item, time) event, columns ``user`` (str), ``item`` (str),
``ts`` (int64; any monotone unit: seconds, milliseconds, day numbers) and ``domain`` (str).

``items``: one row per item, columns ``item`` (str), ``domain`` (str), ``title`` (str or missing).

Timestamps are integers on purpose: the official preprocessing sorted CSV timestamp *strings*, so
9-digit epochs (before Sept. 2001) sorted after 10-digit ones. :func:`validate_interactions`
casts to int64 and refuses values that are not integers.
"""

from __future__ import annotations

import pandas as pd

__all__ = [
    "INTERACTION_COLUMNS",
    "ITEM_COLUMNS",
    "DataError",
    "validate_interactions",
    "validate_items",
]

INTERACTION_COLUMNS = ("user", "item", "ts", "domain")
ITEM_COLUMNS = ("item", "domain", "title")


class DataError(ValueError):
    """Input data that breaks the canonical schema; the message says what and where."""


def _require(df: pd.DataFrame, cols: tuple[str, ...], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(
            f"{what} lacks column(s) {missing}; expected {list(cols)}, found {list(df.columns)}"
        )


def validate_interactions(df: pd.DataFrame, *, source: str = "interactions") -> pd.DataFrame:
    """Return a copy with canonical dtypes: ``user``/``item``/``domain`` str, ``ts`` int64.

    Raises :class:`DataError` on missing columns, missing values, or timestamps that are not
    integers (strings such as ``"1998-01-02"`` or fractional numbers).
    """
    _require(df, INTERACTION_COLUMNS, source)
    out = df.loc[:, list(INTERACTION_COLUMNS)].copy()
    for c in ("user", "item", "domain"):
        if out[c].isna().any():
            n = int(out[c].isna().sum())
            raise DataError(f"{source}: {n} row(s) have no {c!r}")
        out[c] = out[c].astype(str)
    ts = out["ts"]
    if ts.isna().any():
        raise DataError(f"{source}: {int(ts.isna().sum())} row(s) have no timestamp 'ts'")
    if not pd.api.types.is_integer_dtype(ts):
        num = pd.to_numeric(ts, errors="coerce")
        bad = num.isna() | (num != num.round())
        if bad.any():
            first = ts[bad].iloc[0]
            raise DataError(
                f"{source}: timestamp {first!r} is not an integer; 'ts' must hold integer "
                f"times (e.g. unix seconds), never strings or fractions"
            )
        ts = num.astype("int64")
    out["ts"] = ts.astype("int64")
    return out.reset_index(drop=True)


def validate_items(df: pd.DataFrame, *, source: str = "items") -> pd.DataFrame:
    """Return a copy with canonical dtypes; titles may be missing (the pipeline decides)."""
    _require(df, ITEM_COLUMNS, source)
    out = df.loc[:, list(ITEM_COLUMNS)].copy()
    for c in ("item", "domain"):
        if out[c].isna().any():
            raise DataError(f"{source}: {int(out[c].isna().sum())} row(s) have no {c!r}")
        out[c] = out[c].astype(str)
    out["title"] = out["title"].astype(object).where(out["title"].notna(), None)
    return out.reset_index(drop=True)
