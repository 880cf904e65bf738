"""argparse value types every package's CLI uses: a bad flag gets a message that says what was
expected and what was given (argparse turns it into ``error: argument --x: ...`` and exit 2)."""

from __future__ import annotations

import argparse
import math

__all__ = ["nonneg_int", "positive_float", "positive_int", "probability"]


def _parse(s: str, kind: type, expected: str):
    try:
        v = kind(s)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}")
    return v


def positive_int(s: str) -> int:
    """An integer >= 1."""
    v = _parse(s, int, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def nonneg_int(s: str) -> int:
    """An integer >= 0."""
    v = _parse(s, int, "an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def positive_float(s: str) -> float:
    """A finite number > 0."""
    v = _parse(s, float, "a positive number")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def probability(s: str) -> float:
    """A number in [0, 1]."""
    v = _parse(s, float, "a number in [0, 1]")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {v}")
    return v
