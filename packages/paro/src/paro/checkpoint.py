"""Checkpoints of a :class:`~paro.engine.ParoDataParallel`: sharded per rank and consolidated full.

Two formats, both plain dicts of tensors, numbers, strings and lists (``torch.load`` with the
default ``weights_only=True`` reads them):

- **sharded** (``format="paro-sharded"``, :func:`sharded_state_dict`): one per rank; this rank's
  parameter shard(s) at level ``p``, its optimizer-state slice at level ``os`` (per-element tensors
  plus scalars such as Adam's ``step``), the module's persistent buffers, and the layout needed to
  reassemble it (strategy, world size, group size, rank, parameter names and shapes).
- **full** (``format="paro-full"``, :func:`full_state_dict` / :func:`consolidate`): ``"model"`` is
  exactly what ``module.state_dict()`` gives for the unsharded module (load it into a plain model
  with ``model.load_state_dict(ckpt["model"])``); ``"optimizer"`` holds each trainable parameter's
  per-element optimizer state under its name, the scalars and the hyper-parameters.

A full dict loads into any strategy and world size (:func:`load_full`); a set of sharded dicts is
consolidated offline (:func:`consolidate`, no process group needed) and loaded the same way. On disk
(:func:`save`, :func:`load`) a checkpoint is a directory with one ``rank{r}-of-{n}.pt`` per rank,
an optional ``full.pt`` and ``meta.json``, all written atomically; ``meta.json`` is written last,
after every rank has written its file, and names the checkpoint id every file must carry.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from paro.layout import Layout, gather_into
from shared import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from paro.engine import ParoDataParallel

__all__ = [
    "CheckpointError",
    "consolidate",
    "full_state_dict",
    "load",
    "load_full",
    "load_sharded",
    "save",
    "sharded_state_dict",
]

SHARDED, FULL, VERSION = "paro-sharded", "paro-full", 2
# version 1 (paro 0.2.0): one trainable and one frozen buffer at the top level; still read
MASTER = "master"  # per-element key of the fp32 master copy (mixed precision)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, incomplete or does not fit the engine."""


def _module_entries(engine: ParoDataParallel) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """``module.state_dict()`` keys: param key -> canonical param name, and buffer tensors."""
    names = {}
    for buf in engine._buffers_flat():
        for p, name in zip(buf.params, buf.names, strict=True):
            names[id(p)] = name
    aliases: dict[str, str] = {}
    buffers: dict[str, torch.Tensor] = {}
    for key, v in engine.module.state_dict(keep_vars=True).items():
        if id(v) in names:
            aliases[key] = names[id(v)]
        else:
            buffers[key] = v.detach().clone()
    return aliases, buffers


def _optimizer_parts(engine: ParoDataParallel) -> tuple[list[dict], dict, list]:
    """Per trainable unit its per-element optimizer state (+ fp32 master), the scalars (the
    same for every unit's flat parameter, e.g. Adam's ``step``), the hyper-parameters."""
    so = engine._opt
    sd = so.optimizer.state_dict()
    per_elem = []
    for j, master in enumerate(so.masters):
        pe = {k: v.detach().clone() for k, v in so.per_element_state(j).items()}
        if so.mixed:  # the fp32 master copy travels with the optimizer state
            pe[MASTER] = master.detach().clone()
        per_elem.append(pe)
    scalars = {}
    for st in sd["state"].values():
        for k, v in st.items():
            if k not in per_elem[0] and not (isinstance(v, torch.Tensor) and v.dim() == 1):
                scalars[k] = v.clone() if isinstance(v, torch.Tensor) else v
        break
    groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    return per_elem, scalars, groups


def _buffer_meta(buf: Any) -> dict[str, Any]:
    return {
        "names": list(buf.names),
        "shapes": [list(s) for s in buf.shapes],
        "numel": buf.numel,
        "level": buf.level,
        "dtype": str(buf.dtype),
    }


def sharded_state_dict(engine: ParoDataParallel) -> dict[str, Any]:
    """This rank's checkpoint (no communication). Only between steps (after ``step()``)."""
    engine._require_boundary("state_dict()")
    topo = engine.topology
    aliases, buffers = _module_entries(engine)
    per_elem, scalars, groups = _optimizer_parts(engine)

    def part(buf: Any) -> dict[str, Any] | None:
        return None if buf is None else dict(_buffer_meta(buf), shard=buf.shard.detach().clone())

    units = [
        {"name": u.name, "trainable": part(u.train), "frozen": part(u.frozen)}
        for u in engine._units
        if u.buffers()
    ]
    return {
        "format": SHARDED,
        "version": VERSION,
        "strategy": str(engine.strategy),
        "world_size": topo.n,
        "group_size": topo.m,
        "rank": engine._rank,
        "steps": engine.steps_done,
        "units": units,
        "aliases": aliases,
        "buffers": buffers,
        "optimizer": {
            "level": engine.strategy.os,
            "state": per_elem,
            "scalars": scalars,
            "param_groups": groups,
        },
    }


def _split(
    flat: torch.Tensor, names: list[str], shapes: list[list[int]]
) -> dict[str, torch.Tensor]:
    out, off = {}, 0
    for name, shape in zip(names, shapes, strict=True):
        c = int(torch.Size(shape).numel())
        out[name] = flat[off : off + c].view(shape).clone()
        off += c
    return out


def full_state_dict(engine: ParoDataParallel) -> dict[str, Any]:
    """The consolidated checkpoint (collective: every rank calls it and gets the same dict)."""
    engine._require_boundary("full_state_dict()")
    with engine.gathered_parameters(writeback=False):
        model = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    per_elems, scalars, groups = _optimizer_parts(engine)
    state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in engine._train_names}
    aliases, _ = _module_entries(engine)
    for u, per_elem in zip(engine._train_units, per_elems, strict=True):
        tb = u.train
        lay = tb.layout
        for key in sorted(per_elem):
            full = per_elem[key].new_zeros(lay.padded)
            gather_into(full, per_elem[key], engine.strategy.os, lay, tb.pg, "hier")
            values = _split(full, tb.names, [list(s) for s in tb.shapes])
            if key == MASTER:  # mixed precision: the model's trainable values in full precision
                for k, name in aliases.items():
                    if name in values:
                        model[k] = values[name].clone()
                continue
            for name, t in values.items():
                state[name][key] = t
    has_state = any(k != MASTER for pe in per_elems for k in pe)
    return {
        "format": FULL,
        "version": VERSION,
        "saved_from": {
            "strategy": str(engine.strategy),
            "world_size": engine.topology.n,
            "group_size": engine.topology.m,
        },
        "steps": engine.steps_done,
        "model": model,
        "optimizer": {
            "state": state if has_state else {},
            "scalars": scalars,
            "param_groups": groups,
        },
    }


def _upgrade(sd: dict[str, Any]) -> dict[str, Any]:
    """A version-1 sharded dict (paro 0.2.0, whole-model buffers) in the version-2 layout."""
    if sd.get("format") != SHARDED or sd.get("version") != 1:
        return sd
    sd = dict(sd, version=VERSION)
    sd["units"] = [
        {"name": "<root>", "trainable": sd.pop("trainable"), "frozen": sd.pop("frozen", None)}
    ]
    opt = dict(sd["optimizer"])
    opt["state"] = [opt["state"]]
    sd["optimizer"] = opt
    return sd


def _check_format(sd: Any, fmt: str) -> None:
    if not isinstance(sd, dict) or sd.get("format") not in (SHARDED, FULL):
        raise CheckpointError(
            "not a paro checkpoint (expected a dict with format 'paro-sharded' or 'paro-full', "
            f"got {type(sd).__name__}{' with format ' + repr(sd.get('format')) if isinstance(sd, dict) else ''})"
        )
    if sd.get("version") not in (1, VERSION):
        raise CheckpointError(
            f"checkpoint version {sd.get('version')!r}, this paro reads {VERSION}"
        )
    if sd["format"] != fmt:
        raise CheckpointError(f"expected a {fmt!r} checkpoint, got {sd['format']!r}")


def _load_optimizer(
    engine: ParoDataParallel, per_elems: list[dict[str, torch.Tensor]], opt: dict
) -> None:
    so = engine._opt
    if len(per_elems) != len(so.masters):
        raise CheckpointError(
            f"the checkpoint has optimizer state for {len(per_elems)} flat shards, the engine "
            f"{len(so.masters)}"
        )
    state = {}
    for j, per_elem in enumerate(per_elems):
        per_elem = dict(per_elem)
        master = per_elem.pop(MASTER, None)
        if so.mixed and master is not None:
            with torch.no_grad():
                so.masters[j].copy_(master)
        if per_elem or opt["scalars"]:  # own copies: optimizers update scalars in place
            scalars = {
                k: v.clone() if isinstance(v, torch.Tensor) else v
                for k, v in opt["scalars"].items()
            }
            state[j] = {**scalars, **per_elem}
    current = so.optimizer.state_dict()["param_groups"]
    if len(current) != len(opt["param_groups"]):
        raise CheckpointError("the checkpoint's optimizer has a different number of param groups")
    groups = [
        dict(g, params=c["params"]) for g, c in zip(opt["param_groups"], current, strict=True)
    ]
    try:
        so.optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"the checkpoint's optimizer state does not fit: {e}") from e


def unit_layout(engine: ParoDataParallel) -> list[tuple[list[str], list[str]]]:
    """The engine's units as (trainable names, frozen names): a sharded file fits only if equal."""
    return [
        (list(u.train.names) if u.train else [], list(u.frozen.names) if u.frozen else [])
        for u in engine._units
        if u.buffers()
    ]


def _file_layout(sd: dict[str, Any]) -> list[tuple[list[str], list[str]]]:
    return [
        (list(u["trainable"]["names"]) if u["trainable"] else [],
         list(u["frozen"]["names"]) if u["frozen"] else [])
        for u in sd["units"]
    ]  # fmt: skip


def load_sharded(engine: ParoDataParallel, sd: dict[str, Any]) -> None:
    """Load this rank's sharded dict (same strategy, world size, group size, rank and units)."""
    _check_format(sd, SHARDED)
    sd = _upgrade(sd)
    engine._require_boundary("load_state_dict()")
    topo = engine.topology
    want = (str(engine.strategy), topo.n, topo.m, engine._rank)
    got = (sd["strategy"], sd["world_size"], sd["group_size"], sd["rank"])
    if want != got:
        raise CheckpointError(
            f"sharded checkpoint of (strategy, world_size, group_size, rank) = {got} cannot load "
            f"into {want}: consolidate the ranks' files (paro.checkpoint.consolidate, or "
            "engine.load_checkpoint(directory), which does it) and load the full state"
        )
    if _file_layout(sd) != unit_layout(engine):
        raise CheckpointError(
            "the sharded checkpoint was saved with other gathering units (wrap=) or other "
            "parameters than this engine has: load it through engine.load_checkpoint(directory), "
            "which consolidates the ranks' files, or load the full state"
        )
    units = [u for u in engine._units if u.buffers()]
    for u, parts in zip(units, sd["units"], strict=True):
        for buf, part in ((u.train, parts["trainable"]), (u.frozen, parts["frozen"])):
            if buf is None:
                continue
            if part["shapes"] != [list(s) for s in buf.shapes]:
                raise CheckpointError(
                    "the checkpoint's parameter names or shapes differ from the module"
                )
            if part["dtype"] != str(buf.dtype):
                raise CheckpointError(
                    f"sharded checkpoint holds {part['dtype']} parameters, the engine "
                    f"{buf.dtype}: load the full checkpoint (engine.load_checkpoint(directory) "
                    "consolidates it)"
                )
            if part["shard"].shape != buf.shard.shape:
                raise CheckpointError(
                    f"shard of shape {tuple(part['shard'].shape)}, expected "
                    f"{tuple(buf.shard.shape)}"
                )
            with torch.no_grad():
                buf.shard.copy_(part["shard"])
    _load_buffers(engine, sd["buffers"])
    _load_optimizer(engine, sd["optimizer"]["state"], sd["optimizer"])
    engine.steps_done = int(sd["steps"])


def _load_buffers(engine: ParoDataParallel, buffers: dict[str, torch.Tensor]) -> None:
    _, mine = _module_entries(engine)
    if set(mine) != set(buffers):
        raise CheckpointError(
            f"module buffers differ: missing {sorted(set(mine) - set(buffers))}, "
            f"unexpected {sorted(set(buffers) - set(mine))}"
        )
    own = dict(engine.module.named_buffers())
    with torch.no_grad():
        for k, v in buffers.items():
            if k in own:
                own[k].copy_(v)


def load_full(engine: ParoDataParallel, sd: dict[str, Any]) -> None:
    """Load a full (consolidated) dict into any strategy and world size (collective)."""
    _check_format(sd, FULL)
    engine._require_boundary("load_state_dict()")
    with engine.gathered_parameters(writeback=True):
        try:
            engine.module.load_state_dict(sd["model"], strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"the checkpoint's model does not fit the module: {e}") from e
    opt = sd["optimizer"]
    so = engine._opt
    per_elems: list[dict[str, torch.Tensor]] = []
    keys = sorted({k for st in opt["state"].values() for k in st}) if opt["state"] else []
    for u, sl in zip(engine._train_units, so.slices, strict=True):
        tb = u.train
        start, end = sl.os_range
        per_elem: dict[str, torch.Tensor] = {}
        if so.mixed:  # the master copy from the checkpoint's full-precision values
            flat = torch.zeros(tb.padded, dtype=sl.master.dtype, device=tb.device)
            for name, o, shape in zip(tb.names, tb.offsets, tb.shapes, strict=True):
                flat[o : o + shape.numel()].copy_(sd["model"][name].reshape(-1))
            per_elem[MASTER] = flat[start:end].clone()
        for key in keys:
            flat = torch.zeros(tb.padded, dtype=tb.dtype, device=tb.device)
            for name, o, shape in zip(tb.names, tb.offsets, tb.shapes, strict=True):
                if name not in opt["state"] or key not in opt["state"][name]:
                    raise CheckpointError(f"optimizer state {key!r} of {name!r} missing")
                t = opt["state"][name][key]
                if tuple(t.shape) != tuple(shape):
                    raise CheckpointError(
                        f"optimizer state {key!r} of {name!r}: shape {tuple(t.shape)}"
                    )
                flat[o : o + shape.numel()].copy_(t.reshape(-1))
            per_elem[key] = flat[start:end].clone()
        per_elems.append(per_elem)
    _load_optimizer(engine, per_elems, opt)
    engine.steps_done = int(sd["steps"])


def consolidate(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Assemble the full dict from every rank's sharded dict (offline, any order)."""
    if not shards:
        raise CheckpointError("no sharded checkpoints given")
    for sd in shards:
        _check_format(sd, SHARDED)
    shards = [_upgrade(sd) for sd in shards]
    first = shards[0]
    n, m = first["world_size"], first["group_size"]
    ranks = sorted(sd["rank"] for sd in shards)
    if ranks != list(range(n)):
        raise CheckpointError(f"need the files of ranks 0..{n - 1}, got ranks {ranks}")
    for sd in shards:
        if (sd["strategy"], sd["world_size"], sd["group_size"], sd["steps"]) != (
            first["strategy"], n, m, first["steps"],
        ):  # fmt: skip
            raise CheckpointError("the sharded files come from different runs or steps")

    os_level = first["optimizer"]["level"]
    values: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, torch.Tensor]] = {}
    masters: dict[str, torch.Tensor] = {}
    keys: set[str] = set()
    for u_idx, meta_u in enumerate(first["units"]):
        for part_key in ("trainable", "frozen"):
            meta = meta_u[part_key]
            if meta is None:
                continue
            lay = Layout(meta["numel"], n, m)
            full = torch.zeros(lay.padded, dtype=meta["shard"].dtype)
            for sd in shards:
                start, end = lay.shard_range(meta["level"], sd["rank"])
                full[start:end] = sd["units"][u_idx][part_key]["shard"]
            values.update(_split(full, meta["names"], meta["shapes"]))
        tr = meta_u["trainable"]
        if tr is None:
            continue
        j = sum(1 for x in first["units"][:u_idx] if x["trainable"] is not None)
        lay = Layout(tr["numel"], n, m)
        for name in tr["names"]:
            state[name] = {}
        for key in sorted(first["optimizer"]["state"][j]):
            keys.add(key)
            full = torch.zeros(lay.padded, dtype=first["optimizer"]["state"][j][key].dtype)
            for sd in shards:
                start, end = lay.shard_range(os_level, sd["rank"])
                full[start:end] = sd["optimizer"]["state"][j][key]
            split = _split(full, tr["names"], tr["shapes"])
            if key == MASTER:  # mixed precision: full-precision model values
                masters.update(split)
                continue
            for name, t in split.items():
                state[name][key] = t
    model: dict[str, torch.Tensor] = {}
    for key, name in first["aliases"].items():
        model[key] = (masters[name] if name in masters else values[name]).clone()
    model.update({k: v.clone() for k, v in first["buffers"].items()})
    keys.discard(MASTER)
    return {
        "format": FULL,
        "version": VERSION,
        "saved_from": {"strategy": first["strategy"], "world_size": n, "group_size": m},
        "steps": first["steps"],
        "model": model,
        "optimizer": {
            "state": state if keys else {},
            "scalars": first["optimizer"]["scalars"],
            "param_groups": first["optimizer"]["param_groups"],
        },
    }


# ---- on disk
def _rank_file(directory: Path, rank: int, n: int) -> Path:
    return directory / f"rank{rank:05d}-of-{n:05d}.pt"


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    except Exception as e:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(f"checkpoint file {path} is unreadable or corrupt: {e}") from e


def save(engine: ParoDataParallel, directory: str | os.PathLike[str], full: bool = False) -> Path:
    """Write this rank's sharded file (and with ``full=True`` rank 0 writes ``full.pt``), then
    ``meta.json`` once all ranks are done (collective). Every write is atomic."""
    directory = Path(directory)
    n = engine.topology.n
    rank = engine._rank
    ckpt_id = [uuid.uuid4().hex if rank == 0 else None]
    if n > 1:
        dist.broadcast_object_list(ckpt_id, src=0)
    sd = sharded_state_dict(engine)
    sd["checkpoint_id"] = ckpt_id[0]
    with atomic_write(_rank_file(directory, rank, n)) as f:
        torch.save(sd, f)
    if full:
        fsd = full_state_dict(engine)
        fsd["checkpoint_id"] = ckpt_id[0]
        if rank == 0:
            with atomic_write(directory / "full.pt") as f:
                torch.save(fsd, f)
    if n > 1:
        dist.barrier()
    if rank == 0:
        meta = {
            "format": "paro-checkpoint",
            "version": VERSION,
            "checkpoint_id": ckpt_id[0],
            "strategy": str(engine.strategy),
            "world_size": n,
            "group_size": engine.topology.m,
            "steps": engine.steps_done,
            "full": bool(full),
        }
        atomic_write_text(directory / "meta.json", json.dumps(meta, indent=1) + "\n")
    if n > 1:
        dist.barrier()
    return directory


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing: not a paro checkpoint directory, or its save did not finish"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != "paro-checkpoint":
        raise CheckpointError(f"{path} is not a paro checkpoint's meta.json")
    for key in ("checkpoint_id", "strategy", "world_size", "group_size"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks {key!r}")
    return meta


def _checked(sd: Any, path: Path, ckpt_id: str) -> dict[str, Any]:
    if not isinstance(sd, dict) or sd.get("checkpoint_id") != ckpt_id:
        raise CheckpointError(
            f"{path} belongs to another save than meta.json (checkpoint id mismatch): the "
            "directory mixes files of two saves"
        )
    return sd


def load(engine: ParoDataParallel, directory: str | os.PathLike[str]) -> str:
    """Load a checkpoint directory into ``engine``; returns how (``"sharded"``, ``"full"`` or
    ``"consolidated"``). Same strategy and world: each rank reads its own file; otherwise the full
    file, or every rank's file consolidated (resharding)."""
    directory = Path(directory)
    meta = read_meta(directory)
    topo = engine.topology
    same = (meta["strategy"], meta["world_size"], meta["group_size"]) == (
        str(engine.strategy), topo.n, topo.m,
    )  # fmt: skip
    cid = meta["checkpoint_id"]
    if same:
        path = _rank_file(directory, engine._rank, topo.n)
        sd = _upgrade(_checked(_torch_load(path), path, cid))
        if isinstance(sd.get("units"), list) and _file_layout(sd) == unit_layout(engine):
            load_sharded(engine, sd)
            return "sharded"
    if meta.get("full"):
        path = directory / "full.pt"
        load_full(engine, _checked(_torch_load(path), path, cid))
        return "full"
    shards = []
    for r in range(int(meta["world_size"])):
        path = _rank_file(directory, r, int(meta["world_size"]))
        shards.append(_checked(_torch_load(path), path, cid))
    load_full(engine, consolidate(shards))
    return "consolidated"
