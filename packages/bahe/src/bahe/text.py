"""Atomic behaviours: normalisation, stable 64-bit keys and deduplication (BAHE §2, "atomic
behaviour encoding").

An *atomic behaviour* is the smallest repeated unit of a user's textual log: one bill line, one
search query, one mini-program visit. BAHE encodes every *unique* behaviour once with the frozen
lower layers, so the same string must always get the same key, in every process and on every
machine. Keys are the first 8 bytes of blake2b over the normalised UTF-8 text, read as a signed
little-endian int64. Python's ``hash()`` is salted per process and never used.

Normalisation is explicit (:class:`Normalization`) because it decides the dedup ratio: NFKC,
whitespace collapsed and stripped, optionally lowercased. The normaliser does *not* change what
the LM sees unless ``lowercase`` is on (then the stored text, and so the encoded text, is the
lowercased form); two strings that normalise alike share one key and one vector.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["BehaviorCatalog", "Normalization", "behavior_key", "behavior_keys", "normalize"]

_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class Normalization:
    """How a behaviour string is normalised before keying and encoding (ours; the paper is silent).

    Args:
        unicode_form: ``"NFKC"`` (default), ``"NFC"`` or ``None`` (keep the code points).
        lowercase: lowercase the text (default ``False``: cased LMs see the original case).
        collapse_whitespace: turn runs of whitespace into one space and strip the ends.
    """

    unicode_form: str | None = "NFKC"
    lowercase: bool = False
    collapse_whitespace: bool = True

    def __post_init__(self) -> None:
        if self.unicode_form not in (None, "NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(
                f"unicode_form must be None, 'NFC', 'NFKC', 'NFD' or 'NFKD', got {self.unicode_form!r}"
            )

    def to_dict(self) -> dict:
        return {
            "unicode_form": self.unicode_form,
            "lowercase": self.lowercase,
            "collapse_whitespace": self.collapse_whitespace,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(**d)


DEFAULT_NORMALIZATION = Normalization()


def normalize(text: str, norm: Normalization = DEFAULT_NORMALIZATION) -> str:
    """The normalised form of one behaviour string (what is keyed, stored and encoded)."""
    if not isinstance(text, str):
        raise TypeError(f"a behaviour must be a str, got {type(text).__name__}")
    if norm.unicode_form:
        text = unicodedata.normalize(norm.unicode_form, text)
    if norm.collapse_whitespace:
        text = _WS.sub(" ", text).strip()
    if norm.lowercase:
        text = text.lower()
    return text


def _key_of_normalized(s: str) -> int:
    digest = hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def behavior_key(text: str, norm: Normalization = DEFAULT_NORMALIZATION) -> int:
    """Stable signed 64-bit key of a behaviour (blake2b of the normalised UTF-8 text)."""
    return _key_of_normalized(normalize(text, norm))


def behavior_keys(texts: Iterable[str], norm: Normalization = DEFAULT_NORMALIZATION) -> np.ndarray:
    """Keys of many behaviours as an ``int64`` array (repeated strings are hashed once)."""
    cache: dict[str, int] = {}
    out = []
    for t in texts:
        k = cache.get(t)
        if k is None:
            k = cache[t] = behavior_key(t, norm)
        out.append(k)
    return np.asarray(out, dtype=np.int64)


class KeyCollisionError(ValueError):
    """Two different normalised behaviours hash to the same 64-bit key."""


class BehaviorCatalog:
    """The set of unique atomic behaviours of a data set: key -> normalised text, with counts.

    ``add`` takes raw strings and returns their keys; occurrences are counted so the dedup ratio
    (occurrences / unique behaviours, the source of BAHE's offline saving) is known. A 64-bit key
    collision between two different normalised strings raises :class:`KeyCollisionError` (never
    a silent merge).
    """

    def __init__(self, norm: Normalization = DEFAULT_NORMALIZATION) -> None:
        self.norm = norm
        self._text: dict[int, str] = {}
        self._raw: dict[str, int] = {}
        self.occurrences = 0

    def add(self, text: str) -> int:
        k = self._raw.get(text)
        if k is None:
            s = normalize(text, self.norm)
            k = _key_of_normalized(s)
            prev = self._text.get(k)
            if prev is None:
                self._text[k] = s
            elif prev != s:
                raise KeyCollisionError(
                    f"64-bit key collision between {prev!r} and {s!r}; change the normalisation "
                    "or report this (probability ~n^2/2^65)"
                )
            self._raw[text] = k
        self.occurrences += 1
        return k

    def add_many(self, texts: Iterable[str]) -> np.ndarray:
        return np.fromiter((self.add(t) for t in texts), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._text)

    def __contains__(self, key: int) -> bool:
        return int(key) in self._text

    def text(self, key: int) -> str:
        return self._text[int(key)]

    def keys(self) -> np.ndarray:
        """All unique keys, sorted ascending."""
        return np.sort(np.fromiter(self._text, dtype=np.int64, count=len(self._text)))

    def items(self) -> Iterator[tuple[int, str]]:
        """(key, normalised text) in ascending key order."""
        for k in self.keys():
            yield int(k), self._text[int(k)]

    @property
    def dedup_ratio(self) -> float:
        """Behaviour occurrences per unique behaviour (1.0 = no repetition)."""
        return self.occurrences / max(1, len(self._text))

    def merge(self, other: BehaviorCatalog) -> None:
        if other.norm != self.norm:
            raise ValueError("cannot merge catalogues with different normalisations")
        for k, s in other._text.items():
            prev = self._text.get(k)
            if prev is not None and prev != s:
                raise KeyCollisionError(f"64-bit key collision between {prev!r} and {s!r}")
            self._text[k] = s
        self._raw.update(other._raw)
        self.occurrences += other.occurrences
