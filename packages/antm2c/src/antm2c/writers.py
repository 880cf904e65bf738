"""Bounded-memory I/O helpers of the prepare step: a prefetching reader thread, the
per-(split, scene) parquet writer with atomic files, and the malformed-row quarantine."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from shared import atomic_write

if TYPE_CHECKING:
    from .pipeline import PrepareConfig

__all__ = ["MalformedRowError", "PartitionWriter", "Quarantine", "prefetch"]

SPLITS = ("train", "val", "test")


class MalformedRowError(ValueError):
    """A raw row failed validation and ``on_malformed="error"`` was asked for."""


def prefetch(it: Iterable[Any], depth: int = 2) -> Iterable[Any]:
    """Run ``it`` in a background thread (pyarrow's CSV parser releases the GIL), keeping at
    most ``depth`` items in flight so memory stays bounded."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put((None, x), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((None, done))
        except BaseException as e:
            q.put((e, None))

    th = threading.Thread(target=work, daemon=True)
    th.start()
    try:
        while True:
            err, x = q.get()
            if err is not None:
                raise err
            if x is done:
                return
            yield x
    finally:
        stop.set()
        th.join(timeout=5)


class PartitionWriter:
    """Per-(split, scene) row-group buffers and rolling, atomically written parquet files."""

    def __init__(self, out: Path, schema: pa.Schema, cfg: PrepareConfig) -> None:
        self.out, self.schema, self.cfg = out, schema, cfg
        self.buf: dict[tuple[int, int], list[pa.Table]] = {}
        self.nbuf: dict[tuple[int, int], int] = {}
        self.open: dict[tuple[int, int], tuple[Any, Any, pq.ParquetWriter, int]] = {}
        self.file_no: dict[tuple[int, int], int] = {}
        self.files: list[tuple[str, int]] = []
        # one background writer: parquet encoding/compression overlaps the next batch's parsing;
        # at most two writes in flight keeps memory bounded
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1) if cfg.background_io else None
        self.pending: list[Any] = []

    def _wait(self, keep: int) -> None:
        while len(self.pending) > keep:
            self.pending.pop(0).result()

    def add(self, key: tuple[int, int], table: pa.Table) -> None:
        self.buf.setdefault(key, []).append(table)
        self.nbuf[key] = self.nbuf.get(key, 0) + table.num_rows
        if self.nbuf[key] >= self.cfg.row_group_rows:
            self._flush(key)
        # a global budget: all partitions together never buffer more than max_buffered_rows
        while sum(self.nbuf.values()) > self.cfg.max_buffered_rows:
            self._flush(max(self.nbuf, key=lambda k: self.nbuf[k]))

    def _flush(self, key: tuple[int, int]) -> None:
        parts = self.buf.pop(key, [])
        self.nbuf[key] = 0
        if not parts:
            return
        table = pa.concat_tables(parts)
        if key in self.open and self.open[key][3] + table.num_rows > self.cfg.rows_per_file:
            self._close(key)
        if key not in self.open:
            n = self.file_no.get(key, 0)
            self.file_no[key] = n + 1
            split, scene = key
            path = self.out / f"split={SPLITS[split]}" / f"scene={scene}" / f"part-{n:05d}.parquet"
            cm = atomic_write(path, "wb")
            f = cm.__enter__()
            self.open[key] = (cm, path, pq.ParquetWriter(f, self.schema, compression="snappy"), 0)
        cm, path, w, rows = self.open[key]
        if self.pool is None:
            w.write_table(table, row_group_size=max(table.num_rows, 1))
        else:
            self._wait(1)
            self.pending.append(
                self.pool.submit(w.write_table, table, row_group_size=max(table.num_rows, 1))
            )
        self.open[key] = (cm, path, w, rows + table.num_rows)

    def _close(self, key: tuple[int, int]) -> None:
        self._wait(0)
        cm, path, w, rows = self.open.pop(key)
        w.close()
        cm.__exit__(None, None, None)
        self.files.append((str(path.relative_to(self.out)), rows))

    def close(self) -> None:
        for key in list(self.buf):
            self._flush(key)
        for key in list(self.open):
            self._close(key)
        if self.pool is not None:
            self.pool.shutdown()

    def abort(self, exc: BaseException) -> None:
        for fut in self.pending:
            with contextlib.suppress(Exception):
                fut.result()
        self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown()
        for cm, _path, w, _ in self.open.values():
            with contextlib.suppress(Exception):
                w.close()
            cm.__exit__(type(exc), exc, exc.__traceback__)
        self.open.clear()


class Quarantine:
    """Malformed rows: counted, kept as examples, and streamed to ``quarantine/malformed.csv``."""

    def __init__(self, out: Path, cfg: PrepareConfig) -> None:
        self.cfg = cfg
        self.count = 0
        self.examples: list[dict[str, Any]] = []
        self.path = out / "quarantine" / "malformed.csv"
        self._cm = None
        self._w = None

    def add(self, source: str, line: int | None, reason: str, raw: str) -> None:
        self.count += 1
        if len(self.examples) < 20:
            self.examples.append({"file": source, "line": line, "reason": reason})
        where = f"{source}:{line}" if line is not None else source
        if self.cfg.on_malformed == "error":
            raise MalformedRowError(f"{where}: malformed row ({reason}): {raw[:200]!r}")
        if self._w is None:
            self._cm = atomic_write(self.path, "w")
            self._w = csv.writer(self._cm.__enter__())
            self._w.writerow(["file", "line", "reason", "raw"])
        self._w.writerow([source, line, reason, raw])

    def close(self, exc: BaseException | None = None) -> None:
        if self._cm is not None:
            if exc is None:
                self._cm.__exit__(None, None, None)
            else:
                self._cm.__exit__(type(exc), exc, exc.__traceback__)
            self._cm = self._w = None
