"""Logging set-up and progress bars that go quiet when output is not a terminal."""

from __future__ import annotations

import logging
import os
import sys
import time
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


class _LogBar(tqdm):
    """A tqdm that draws nothing but writes a plain progress line to stderr every ``log_every``
    items (and at least every ``log_interval`` seconds while items arrive), plus one when it
    closes: what a bar shows, in a form that survives pipes, CI logs and ``tee``."""

    def __init__(
        self, *args: Any, log_every: int | None = None, log_interval: float = 30.0, **kw: Any
    ) -> None:
        kw["disable"] = True
        super().__init__(*args, **kw)
        self._desc = kw.get("desc") or ""
        self._unit = kw.get("unit") or "it"
        self._every = log_every
        self._interval = log_interval
        self._count = 0
        self._t0 = self._last = time.monotonic()
        self._closed = False

    def _line(self, done: bool = False) -> None:
        n = self._count
        tot = self.total
        shown = (
            f"{n:,}/{tot:,} {self._unit} ({100.0 * n / tot:.0f}%)" if tot else f"{n:,} {self._unit}"
        )
        el = time.monotonic() - self._t0
        rate = f", {n / el:,.1f} {self._unit}/s" if el > 0 and n else ""
        head = f"{self._desc}: " if self._desc else ""
        print(
            f"{head}{'done ' if done else ''}{shown} in {el:.1f} s{rate}",
            file=sys.stderr,
            flush=True,
        )
        self._last = time.monotonic()

    def update(self, n: float | None = 1) -> bool | None:
        before = self._count
        self._count += n or 0
        self.n = self._count
        now = time.monotonic()
        crossed = (
            self._every is not None
            and self._every > 0
            and (int(self._count // self._every) > int(before // self._every))
        )
        if crossed or now - self._last >= self._interval:
            self._line()
        return None

    def __iter__(self):  # type: ignore[override]
        try:
            for x in self.iterable:
                yield x
                self.update(1)
        finally:
            self.close()

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._line(done=True)
        super().close()


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    log_every: int | None = None,
    log_interval: float = 30.0,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar on stderr; off a terminal (CI, logs, pipes) it becomes plain log lines.

    Use it like tqdm: ``for x in progress(xs, desc="sampling"): ...`` or as a manual bar with
    ``total=`` and ``.update(n)``. When stderr is not a terminal no bar is drawn; instead one
    line per ``log_every`` items (default: every tenth of ``total`` when it is known), at least
    one per ``log_interval`` seconds while it advances, and one when the bar closes, reach
    stderr. ``PROGRESS=0`` (or ``disable=True``) silences both, ``PROGRESS=1`` forces the bar.
    """
    disable = kwargs.pop("disable", None)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    if disable is None:
        if progress_enabled():
            disable = False
        elif os.environ.get("PROGRESS") == "0":
            disable = True
        else:
            total = total if total is not None else _len_or_none(iterable)
            every = log_every if log_every is not None else (max(1, total // 10) if total else None)
            return _LogBar(
                iterable,
                desc=desc,
                total=total,
                file=sys.stderr,
                log_every=every,
                log_interval=log_interval,
                **kwargs,
            )
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, disable=disable, **kwargs)


def _len_or_none(it: Any) -> int | None:
    try:
        return len(it)
    except TypeError:
        return None
