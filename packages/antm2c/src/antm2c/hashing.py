"""Stable 64-bit keys for ids, categorical codes and text tokens (blake2b, never ``hash()``).

Used by :mod:`antm2c.pipeline`: every id, code and token becomes a signed 64-bit key, so the
prepared parquet is independent of any vocabulary and hashing works at the 1 B-row scale.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["key64", "key64_columns", "tokens"]

_HASH_CACHE: dict[str, int] = {}
_HASH_CACHE_MAX = 1 << 18


def _blake(s: str) -> int:
    h = _HASH_CACHE.get(s)
    if h is None:
        h = (
            int.from_bytes(
                hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little", signed=True
            )
            if s
            else 0
        )
        if len(_HASH_CACHE) >= _HASH_CACHE_MAX:  # bounded: memory never grows with the input
            _HASH_CACHE.clear()
        _HASH_CACHE[s] = h
    return h


def key64(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable signed 64-bit keys (blake2b of UTF-8) of a string array; ``""``/null -> 0.

    Only the distinct strings of the array are hashed (dictionary encoding, plus a bounded
    cache across calls), so the Python work is per unique value, not per row. Never uses
    Python's salted ``hash()``.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if len(values) == 0:
        return np.zeros(0, np.int64)
    enc = pc.dictionary_encode(values)
    uniq = enc.dictionary.to_pylist()
    h = np.fromiter(
        (_blake(s) if s is not None else 0 for s in uniq), dtype=np.int64, count=len(uniq)
    )
    idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    out = h[np.maximum(idx, 0)] if len(h) else np.zeros(len(idx), np.int64)
    if (idx < 0).any():
        out = np.where(idx < 0, 0, out)
    return out


def tokens(col: pa.Array, sep: str | None, max_tokens: int, lower: bool) -> pa.Array:
    """Split strings into tokens (``sep``, or whitespace when ``None``), keep the first
    ``max_tokens``, and return a ``list<int64>`` array of their keys (empty token -> 0).

    Arrow kernels only; an all-ASCII column is lowercased with the cheaper ASCII kernel (same
    result) and lists are only sliced when one is longer than ``max_tokens``."""
    col = col.fill_null("")
    if lower:
        ascii_only = len(col) == 0 or pc.all(pc.string_is_ascii(col)).as_py()
        col = pc.ascii_lower(col) if ascii_only else pc.utf8_lower(col)
    lists = pc.utf8_split_whitespace(col) if sep is None else pc.split_pattern(col, sep)
    lengths = pc.list_value_length(lists).fill_null(0)
    if len(lists) and (pc.max(lengths).as_py() or 0) > max_tokens:
        lists = pc.list_slice(lists, 0, max_tokens)
        lengths = pc.list_value_length(lists).fill_null(0)
    lengths = lengths.to_numpy(zero_copy_only=False)
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    keys = key64(flat)
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(keys, pa.int64()))


def key64_columns(cols: list[pa.Array | pa.ChunkedArray]) -> list[np.ndarray]:
    """:func:`key64` of several equally long string columns in one pass (their distinct
    values are hashed once across all of them); same keys as one call per column."""
    if not cols:
        return []
    arrs = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols]
    n = len(arrs[0])
    keys = key64(pa.concat_arrays(arrs))
    return [keys[i * n : (i + 1) * n] for i in range(len(arrs))]
