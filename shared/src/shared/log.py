"""Logging set-up and progress bars that go quiet when output is not a terminal."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "progress_enabled", "setup_logging"]

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int | str = "INFO", *, rank: int | None = None) -> logging.Logger:
    """Configure the root logger once (idempotent) and return it.

    ``level`` may be a name or number; the environment variable ``LOG_LEVEL`` overrides it. With
    ``rank`` given, every line is prefixed with ``[rank N]`` so interleaved process output reads.
    """
    level = os.environ.get("LOG_LEVEL", level)
    if isinstance(level, str):
        name = level.upper()
        if name not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {level!r}")
        level = logging.getLevelNamesMapping()[name]
    root = logging.getLogger()
    fmt = _FORMAT if rank is None else f"[rank {rank}] {_FORMAT}"
    handler = next((h for h in root.handlers if getattr(h, "_shared_handler", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._shared_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(logging.Formatter(fmt))
    root.setLevel(level)
    return root


def progress_enabled(stream: Any = None) -> bool:
    """True when progress bars should draw: ``stream`` (stderr) is a terminal.

    ``PROGRESS=1`` forces bars on (e.g. in a demo piped through ``tee``), ``PROGRESS=0`` off.
    """
    forced = os.environ.get("PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(
    iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None, **kwargs: Any
) -> tqdm:
    """A tqdm bar on stderr that is disabled when stderr is not a terminal (CI, logs, pipes).

    Use it like tqdm: ``for x in progress(xs, desc="sampling"): ...`` or as a manual bar with
    ``total=`` and ``.update(n)``.
    """
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, **kwargs)
