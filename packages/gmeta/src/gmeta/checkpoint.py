"""Checkpoints of a hybrid-parallel meta-trainer: sharded tables included, atomic, resumable.

Layout of ``<dir>/step-<N>/``:

* ``shard-<r>-of-<W>.pt``: rank ``r``'s table rows (global ids, weights, row-optimiser state);
* ``dense.pt`` (rank 0): dense parameters, dense optimiser state, step, loader position;
* ``COMPLETE.json`` (rank 0, written last, after every rank's files are durable): the step,
  world size, and the SHA-256 of every file. A checkpoint without it, or whose files do not
  match it, is not a checkpoint (a crash mid-save leaves no half-checkpoint that looks whole).

``<dir>/latest`` names the newest complete checkpoint (atomically replaced). Every file is
written with :func:`shared.atomic_write_bytes` (temp file, fsync, rename). Loading verifies the
hashes, and re-shards: a rank reads every shard file and keeps the rows it owns, so a run saved
at one world size resumes at another.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gmeta.trainer import MetaTrainer
from shared import atomic_write_bytes, atomic_write_text

__all__ = ["CheckpointError", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

COMPLETE = "COMPLETE.json"
LATEST = "latest"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not fit the trainer."""


def _bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _barrier(trainer: MetaTrainer) -> None:
    if trainer.distributed:
        dist.barrier(group=trainer.group)


def save_checkpoint(
    directory: str | Path,
    trainer: MetaTrainer,
    *,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Save the trainer (collective: every rank writes its shard). Returns the checkpoint path.

    ``extra`` (JSON-able, rank 0's) is stored in ``COMPLETE.json`` (e.g. loader position, config).
    Older complete checkpoints beyond the newest ``keep`` are removed.
    """
    if keep < 1:
        raise ValueError("keep must be >= 1")
    root = Path(directory)
    step = trainer.step_count
    cdir = root / f"step-{step:08d}"
    table = trainer.table
    w, r = table.world, table.rank
    files: dict[str, str] = {}
    shard = _bytes(table.state_dict())
    name = f"shard-{r:05d}-of-{w:05d}.pt"
    atomic_write_bytes(cdir / name, shard)
    files[name] = _sha(shard)
    if r == 0:
        dense = _bytes(trainer.state_dict())
        atomic_write_bytes(cdir / "dense.pt", dense)
        files["dense.pt"] = _sha(dense)
    if trainer.distributed:
        gathered: list[Any] = [None] * w
        dist.all_gather_object(gathered, files, group=trainer.group)
        files = {k: v for d in gathered for k, v in d.items()}
    if r == 0:
        meta = {
            "step": step,
            "world": w,
            "num_rows": table.num_rows,
            "dim": table.dim,
            "files": files,
            "extra": extra or {},
        }
        atomic_write_text(cdir / COMPLETE, json.dumps(meta, indent=2) + "\n")
        atomic_write_text(root / LATEST, cdir.name + "\n")
        done = sorted(p for p in root.glob("step-*") if (p / COMPLETE).is_file())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(trainer)
    return cdir


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest complete checkpoint under ``directory`` (``None`` if there is none)."""
    root = Path(directory)
    if not root.is_dir():
        return None
    named = root / LATEST
    if named.is_file():
        cand = root / named.read_text().strip()
        if (cand / COMPLETE).is_file():
            return cand
    done = sorted(p for p in root.glob("step-*") if (p / COMPLETE).is_file())
    return done[-1] if done else None


def _read_verified(cdir: Path, name: str, meta: dict[str, Any]) -> Any:
    p = cdir / name
    if name not in meta["files"]:
        raise CheckpointError(f"{cdir}: {name} is not listed in {COMPLETE}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{cdir}: cannot read {name} ({e})") from e
    if _sha(data) != meta["files"][name]:
        raise CheckpointError(
            f"{p}: SHA-256 mismatch: the file is corrupt; use an older checkpoint"
        )
    return torch.load(io.BytesIO(data), weights_only=True)


def load_checkpoint(path: str | Path, trainer: MetaTrainer) -> dict[str, Any]:
    """Load a checkpoint into ``trainer`` (every rank; any world size). Returns its metadata."""
    cdir = Path(path)
    try:
        meta = json.loads((cdir / COMPLETE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{cdir}: no {COMPLETE}: not a complete checkpoint") from None
    except ValueError as e:
        raise CheckpointError(f"{cdir}: unreadable {COMPLETE} ({e})") from e
    if meta["num_rows"] != trainer.table.num_rows or meta["dim"] != trainer.table.dim:
        raise CheckpointError(
            f"{cdir}: table {meta['num_rows']}x{meta['dim']} does not fit this trainer's "
            f"{trainer.table.num_rows}x{trainer.table.dim}"
        )
    shard_names = sorted(n for n in meta["files"] if n.startswith("shard-"))
    if len(shard_names) != meta["world"]:
        raise CheckpointError(f"{cdir}: {len(shard_names)} shard files for world {meta['world']}")
    shards = [_read_verified(cdir, n, meta) for n in shard_names]
    dense = _read_verified(cdir, "dense.pt", meta)
    try:
        trainer.load_state_dict(dense)
        trainer.table.load_shards(shards)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{cdir}: does not fit this trainer ({e})") from e
    return meta
