"""Leaderboard: one row per (task, model) with overall, per-scene and cold/warm metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared import atomic_write_text

__all__ = ["Leaderboard"]

_COLS = (
    "task",
    "model",
    "auc",
    "logloss",
    "gauc",
    "scene_avg_auc",
    "cold_user_auc",
    "cold_item_auc",
    "seconds",
)


def _fmt(v: Any, col: str = "") -> str:
    if col == "seconds" and isinstance(v, int | float):
        return f"{v:.1f}"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}"
    return "—" if v is None else str(v)


class Leaderboard:
    """Collects run summaries (see :meth:`antm2c.train.RunResult.summary`) and renders them."""

    def __init__(self, rows: Iterable[dict[str, Any]] = ()) -> None:
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows]

    def add(self, summary: dict[str, Any], scene_auc: dict[str, float] | None = None) -> None:
        row = dict(summary)
        for k, v in (scene_auc or {}).items():
            row[f"scene{k}_auc"] = v
        self.rows.append(row)

    @classmethod
    def from_runs(cls, run_dirs: Iterable[str | Path]) -> Leaderboard:
        """Read ``metrics.json`` of each run directory (as written by ``antm2c train``)."""
        lb = cls()
        for d in run_dirs:
            p = Path(d) / "metrics.json"
            if not p.is_file():
                raise FileNotFoundError(f"{d}: no metrics.json (not an `antm2c train` run dir)")
            doc = json.loads(p.read_text())
            lb.add(doc["summary"], {k: v["auc"] for k, v in doc["metrics"]["scene"].items()})
        return lb

    def sorted(self, key: str = "auc") -> list[dict[str, Any]]:
        return sorted(self.rows, key=lambda r: (r.get("task", ""), -_num(r.get(key))))

    def to_markdown(self, key: str = "auc") -> str:
        scenes = sorted(
            {
                k
                for r in self.rows
                for k in r
                if k.startswith("scene") and k.endswith("_auc") and k != "scene_avg_auc"
            }
        )
        cols = [*_COLS[:-1], *scenes, _COLS[-1]]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.sorted(key):
            lines.append("| " + " | ".join(_fmt(r.get(c), c) for c in cols) + " |")
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write JSON (``.json``) or markdown (anything else), atomically."""
        p = Path(path)
        if p.suffix == ".json":
            atomic_write_text(p, json.dumps(self.rows, indent=2, default=float) + "\n")
        else:
            atomic_write_text(p, self.to_markdown())
        return p


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(f) else f
