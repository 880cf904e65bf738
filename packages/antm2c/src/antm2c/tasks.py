"""AntM2C tasks (SIGIR'24 version): single-scenario, multi-scenario, user/item cold-start,
multi-modal; and the split audit.

A :class:`Task` is a choice of scenes, a feature set, and evaluation strata over a prepared data
set (:func:`antm2c.pipeline.prepare`). Splits are by time (see the manifest's cutoffs); the
default cutoffs are the community's, not an official split. Cold-start is *zero-shot*: a cold
user/item has no row in the training split (the released data has no official cold-start
protocol; this is ours).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from .features import FeatureEncoder, FeatureSpec, ParquetStream
from .pipeline import SPLITS, parse_cutoff, read_manifest, split_files
from .schema import N_SCENES, TEXT_COLUMNS, TIME

__all__ = [
    "LeakageError",
    "Task",
    "audit_splits",
    "cold_start",
    "multi_scenario",
    "multimodal",
    "single_scenario",
]


class LeakageError(AssertionError):
    """A split audit failed: rows on the wrong side of a time cutoff, or a cold-start target
    present in training."""


@dataclass
class Task:
    name: str
    root: Path
    scenes: tuple[int, ...]
    spec: FeatureSpec
    focus: str | None = None  # "cold_user" / "cold_item": the stratum the task is about
    notes: dict[str, Any] = field(default_factory=dict)

    def files(self, split: str) -> list[Path]:
        return split_files(self.root, split, self.scenes)

    def fit_encoder(self) -> FeatureEncoder:
        files = self.files("train")
        if not files:
            raise ValueError(
                f"task {self.name}: the training split has no rows for scenes {self.scenes}"
            )
        return FeatureEncoder.fit(files, self.spec)

    def streams(
        self, encoder: FeatureEncoder, *, batch_size: int = 1024, seed: int = 0, device: str = "cpu"
    ) -> tuple[ParquetStream, ParquetStream, ParquetStream]:
        mk = lambda split, shuffle: ParquetStream(  # noqa: E731
            self.files(split),
            encoder,
            batch_size=batch_size if shuffle else 8192,
            shuffle=shuffle,
            seed=seed,
            device=device,
        )
        return mk("train", True), mk("val", False), mk("test", False)

    def audit(self) -> dict[str, Any]:
        """Time audit of the whole data set plus this task's cold-start counts."""
        rep = audit_splits(self.root)
        if self.focus:
            rep["cold_start"] = audit_cold_start(self.root, self.scenes)
        return rep


def _check_root(root: str | Path) -> Path:
    read_manifest(root)
    return Path(root)


def _scenes(scenes: Iterable[int] | None) -> tuple[int, ...]:
    s = tuple(range(N_SCENES)) if scenes is None else tuple(int(x) for x in scenes)
    bad = [x for x in s if not 0 <= x < N_SCENES]
    if bad or not s:
        raise ValueError(f"scenes must be non-empty and within 0..{N_SCENES - 1}, got {s}")
    return s


def single_scenario(root: str | Path, scene: int, spec: FeatureSpec | None = None) -> Task:
    """Train and evaluate on one scene only (the baseline that multi-scenario models beat)."""
    return Task(
        f"single_s{int(scene)}",
        _check_root(root),
        _scenes([scene]),
        spec or FeatureSpec.preset("tabular"),
    )


def multi_scenario(
    root: str | Path, scenes: Iterable[int] | None = None, spec: FeatureSpec | None = None
) -> Task:
    """Train one model on all (given) scenes; report per-scene and scene-averaged AUC."""
    return Task("multi", _check_root(root), _scenes(scenes), spec or FeatureSpec.preset("tabular"))


def cold_start(
    root: str | Path,
    target: str = "item",
    spec: FeatureSpec | None = None,
    scenes: Iterable[int] | None = None,
) -> Task:
    """Zero-shot cold-start: evaluate on users (items) with no training rows, beside warm ones."""
    if target not in ("user", "item"):
        raise ValueError(f"cold_start target must be 'user' or 'item', got {target!r}")
    return Task(
        f"cold_{target}",
        _check_root(root),
        _scenes(scenes),
        spec or FeatureSpec.preset("text"),
        focus=f"cold_{target}",
    )


def multimodal(
    root: str | Path,
    text: Iterable[str] | None = TEXT_COLUMNS,
    image: str | Path | None = None,
    base: str = "id",
    scenes: Iterable[int] | None = None,
) -> Task:
    """ID features plus text (bag of token embeddings per field) and, optionally, a
    pre-computed item image-embedding file (keyed by original item id)."""
    spec = FeatureSpec.preset(base)
    spec = replace(spec, sequences=tuple(text or ()), image=None if image is None else str(image))
    return Task("multimodal", _check_root(root), _scenes(scenes), spec, focus="cold_item")


def _file_time_range(path: Path) -> tuple[int, int] | None:
    md = pq.ParquetFile(path).metadata
    col = md.schema.names.index(TIME)
    lo = hi = None
    for i in range(md.num_row_groups):
        st = md.row_group(i).column(col).statistics
        if st is None or not st.has_min_max:
            return None
        a = np.datetime64(st.min, "s").astype(np.int64)
        b = np.datetime64(st.max, "s").astype(np.int64)
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    return None if lo is None else (int(lo), int(hi))


def audit_splits(root: str | Path) -> dict[str, Any]:
    """Leakage audit of a prepared data set; raises :class:`LeakageError` on any violation.

    Checks, from the parquet statistics of every file (exact, no full scan), that train rows are
    all before cutoff 1, val rows in [cutoff 1, cutoff 2) and test rows at or after cutoff 2, and
    that row counts add up to the manifest's.
    """
    doc = read_manifest(root)
    c1, c2 = (int(np.datetime64(parse_cutoff(c), "s").astype(np.int64)) for c in doc["cutoffs"])
    bounds = {"train": (None, c1), "val": (c1, c2), "test": (c2, None)}
    ranges: dict[str, list[int | None]] = {}
    total = 0
    for split in SPLITS:
        lo_all = hi_all = None
        for f in split_files(root, split):
            md = pq.ParquetFile(f).metadata
            total += md.num_rows
            rng = _file_time_range(f)
            if rng is None:
                if md.num_rows:
                    raise LeakageError(f"{f}: no log_time statistics; cannot audit")
                continue
            lo, hi = rng
            lo_all = lo if lo_all is None else min(lo_all, lo)
            hi_all = hi if hi_all is None else max(hi_all, hi)
            a, b = bounds[split]
            if (a is not None and lo < a) or (b is not None and hi >= b):
                raise LeakageError(
                    f"{f}: {split} rows span {np.datetime64(lo, 's')}..{np.datetime64(hi, 's')}"
                    f", outside the split's window (cutoffs {doc['cutoffs']})"
                )
        ranges[split] = [
            None if lo_all is None else str(np.datetime64(lo_all, "s")),
            None if hi_all is None else str(np.datetime64(hi_all, "s")),
        ]
    if total != doc["rows_written"]:
        raise LeakageError(f"{root}: files hold {total} rows, manifest says {doc['rows_written']}")
    return {
        "ok": True,
        "cutoffs": doc["cutoffs"],
        "time_range": ranges,
        "rows": total,
        "official_split": False,
    }


def audit_cold_start(root: str | Path, scenes: Iterable[int] | None = None) -> dict[str, Any]:
    """Count zero-shot users/items of val and test (keys absent from train), and verify that
    none of them occurs in the training split (a second, independent pass)."""
    scenes = _scenes(scenes)
    seen: dict[str, set[int]] = {"user_id": set(), "item_id": set()}
    for f in split_files(root, "train", scenes):
        t = pq.read_table(f, columns=["user_id", "item_id"])
        for c in seen:
            seen[c].update(np.unique(t.column(c).to_numpy()).tolist())
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        keys: dict[str, set[int]] = {"user_id": set(), "item_id": set()}
        rows = {"user_id": 0, "item_id": 0}
        n = 0
        for f in split_files(root, split, scenes):
            t = pq.read_table(f, columns=["user_id", "item_id"])
            n += t.num_rows
            for c in keys:
                v = t.column(c).to_numpy()
                cold = ~np.isin(v, np.fromiter(seen[c], np.int64, len(seen[c])))
                rows[c] += int(cold.sum())
                keys[c].update(np.unique(v[cold]).tolist())
        for c, ks in keys.items():
            if ks & seen[c]:
                raise LeakageError(f"{split}: cold {c} keys found in train")
        out[split] = {
            "rows": n,
            "cold_user_rows": rows["user_id"],
            "cold_item_rows": rows["item_id"],
            "cold_users": len(keys["user_id"]),
            "cold_items": len(keys["item_id"]),
        }
    return out
