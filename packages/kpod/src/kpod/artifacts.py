"""Stage artifacts: parquet tables, JSON records and model folders, all written atomically.

Every pipeline stage writes its outputs, then a ``<stage>.done.json`` marker holding the hash of
the configuration that produced them. A rerun skips a stage whose marker matches, refuses (with a
clear error) to reuse one made under a different configuration, and redoes a stage whose marker is
missing (a run killed mid-stage leaves no marker, only whole files or none).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kpod.schema import KPODDataError
from shared import atomic_write_bytes, atomic_write_text

__all__ = [
    "config_hash",
    "read_json",
    "read_parquet",
    "save_model_dir",
    "stage_done",
    "write_json",
    "write_parquet",
]


def config_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_parquet(
    path: str | Path, df: pd.DataFrame, metadata: dict[str, str] | None = None
) -> Path:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_parquet(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    p = Path(path)
    if not p.is_file():
        raise KPODDataError(f"{p}: missing artifact (run the stage that makes it first)")
    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as e:
        raise KPODDataError(f"{p}: not a readable parquet file ({e})") from None
    meta = {
        k.decode(): v.decode()
        for k, v in (table.schema.metadata or {}).items()
        if not k.startswith(b"pandas")
    }
    return table.to_pandas(), meta


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise KPODDataError(f"{p}: missing artifact (run the stage that makes it first)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise KPODDataError(f"{p}: corrupt JSON ({e.msg} at line {e.lineno})") from None


def save_model_dir(
    path: str | Path, model: Any, tokenizer: Any | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """``save_pretrained`` into a temporary sibling folder, then swap it into place."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if model is not None:
            model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, obj in (extra or {}).items():
            if name.endswith(".pt"):
                import torch

                torch.save(obj, tmp / name)
            else:
                (tmp / name).write_text(json.dumps(obj, default=str))
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def stage_done(out: Path, stage: str, cfg_hash: str, *, force: bool = False) -> bool:
    """True when ``stage`` finished before under the same configuration hash."""
    marker = out / f"{stage}.done.json"
    if force or not marker.is_file():
        return False
    rec = read_json(marker)
    if rec.get("config") != cfg_hash:
        raise KPODDataError(
            f"{out}: stage {stage!r} was run with a different configuration "
            f"({rec.get('config')} != {cfg_hash}); use a new output folder or --force"
        )
    return True


def mark_done(out: Path, stage: str, cfg_hash: str, info: dict[str, Any] | None = None) -> None:
    write_json(out / f"{stage}.done.json", {"stage": stage, "config": cfg_hash, **(info or {})})
