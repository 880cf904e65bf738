"""Distributed set-up: process groups from torchrun or the environment, rank info, node groups,
and :func:`spawn` for running a function in real processes (tests and demos).

Backends: ``nccl`` when CUDA is available (one GPU per local rank), ``gloo`` otherwise; a caller
may force either. Every process group gets an explicit timeout, so a dead peer fails loudly instead
of hanging forever.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import queue as _queue
import socket
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = [
    "DistInfo",
    "NodeGroups",
    "SpawnError",
    "SpawnTimeout",
    "default_backend",
    "destroy_distributed",
    "find_free_port",
    "get_info",
    "init_distributed",
    "make_node_groups",
    "spawn",
]

_ENV_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: global rank/world, node-local rank/world, backend, device."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on global rank 0."""
        return self.rank == 0

    @property
    def node_rank(self) -> int:
        """Index of this process's node (``rank // local_world_size``)."""
        return self.rank // self.local_world_size


def default_backend() -> str:
    """``"nccl"`` when CUDA (and NCCL) is available, else ``"gloo"``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise RuntimeError(
                f"environment variable {name} is not set: launch with torchrun, or set "
                f"{', '.join(_ENV_KEYS)} yourself (or use shared.spawn)"
            )
        return default
    try:
        return int(raw)
    except ValueError:
        raise RuntimeError(f"environment variable {name}={raw!r} is not an integer") from None


def _device_for(backend: str, local_rank: int) -> torch.device:
    if backend == "nccl":
        n = torch.cuda.device_count()
        if n == 0:
            raise RuntimeError("backend 'nccl' needs CUDA, but no GPU is visible")
        return torch.device("cuda", local_rank % n)
    return torch.device("cpu")


def get_info() -> DistInfo:
    """The :class:`DistInfo` of the initialised default process group."""
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: call init_distributed() first")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    local_rank = _env_int("LOCAL_RANK", rank % local_world)
    backend = str(dist.get_backend())
    return DistInfo(rank, world, local_rank, local_world, backend, _device_for(backend, local_rank))


def init_distributed(backend: str | None = None, *, timeout_s: float = 300.0) -> DistInfo:
    """Initialise the default process group from the environment (torchrun sets it) and return info.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` and optionally ``LOCAL_RANK``
    / ``LOCAL_WORLD_SIZE``. ``backend`` defaults to :func:`default_backend`. With nccl the current
    CUDA device is set to the local rank. Idempotent: when already initialised it returns the info.
    """
    if dist.is_initialized():
        return get_info()
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    backend = backend or default_backend()
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"environment variable {key} is not set (torchrun sets it)")
    if not 0 <= rank < world:
        raise RuntimeError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")
    local_rank = _env_int("LOCAL_RANK", rank)
    device = _device_for(backend, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(
        backend=backend,
        rank=rank,
        world_size=world,
        timeout=_dt.timedelta(seconds=timeout_s),
        **kwargs,
    )
    return get_info()


def destroy_distributed() -> None:
    """Tear down the default process group if one exists."""
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class NodeGroups:
    """Node-local (intra) and cross-node (inter) subgroups for a node size.

    With world size ``W`` and node size ``s`` there are ``W/s`` nodes; node ``n`` holds global ranks
    ``n*s .. n*s+s-1``. ``intra`` is this rank's node; ``inter`` links the ranks that have the same
    local index on every node (``l, l+s, l+2s, ...``), the rings of hierarchical collectives.
    """

    node_size: int
    num_nodes: int
    node_index: int
    local_index: int
    intra: Any
    inter: Any
    intra_ranks: tuple[int, ...]
    inter_ranks: tuple[int, ...]


def make_node_groups(node_size: int) -> NodeGroups:
    """Build the intra-node and inter-node groups for ``node_size`` ranks per node.

    Collective: every rank must call it, in the same order relative to other group creation.
    Raises ``ValueError`` when ``node_size`` does not divide the world size.
    """
    if not dist.is_initialized():
        raise RuntimeError("make_node_groups needs an initialised process group")
    world, rank = dist.get_world_size(), dist.get_rank()
    if not isinstance(node_size, int) or node_size < 1 or world % node_size:
        raise ValueError(
            f"node_size={node_size!r} must be a positive divisor of the world size {world}"
        )
    num_nodes = world // node_size
    node_index, local_index = divmod(rank, node_size)
    intra = inter = None
    intra_ranks: tuple[int, ...] = ()
    inter_ranks: tuple[int, ...] = ()
    # every rank creates every group, in the same order (a torch.distributed requirement)
    for n in range(num_nodes):
        ranks = tuple(range(n * node_size, (n + 1) * node_size))
        g = dist.new_group(list(ranks))
        if n == node_index:
            intra, intra_ranks = g, ranks
    for local in range(node_size):
        ranks = tuple(range(local, world, node_size))
        g = dist.new_group(list(ranks))
        if local == local_index:
            inter, inter_ranks = g, ranks
    return NodeGroups(
        node_size, num_nodes, node_index, local_index, intra, inter, intra_ranks, inter_ranks
    )


# --------------------------------------------------------------------------- spawn


class SpawnError(RuntimeError):
    """A spawned rank raised or died; the message carries that rank's traceback."""


class SpawnTimeout(SpawnError):
    """The spawned ranks did not all finish within the timeout; all were killed."""


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _child(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    args: tuple,
    kwargs: dict,
    env: dict[str, str],
    init: bool,
    backend: str | None,
    pg_timeout_s: float,
    results: Any,
) -> None:
    os.environ.update(env)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank)})
    try:
        from shared.comm import install_comm_hooks

        install_comm_hooks()  # before any library captures torch.distributed functions
        if init:
            init_distributed(backend, timeout_s=pg_timeout_s)
        out = fn(*args, **kwargs)
        try:
            payload = pickle.dumps(out)
        except Exception as e:
            raise TypeError(f"the return value of rank {rank} cannot be pickled: {e}") from e
        results.put((rank, "ok", payload))
    except BaseException as e:
        results.put((rank, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        raise SystemExit(1) from None
    finally:
        destroy_distributed()


def spawn(
    fn: Callable[..., Any],
    world_size: int,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    timeout_s: float = 120.0,
    init: bool = True,
    backend: str | None = "gloo",
    env: Mapping[str, str] | None = None,
    local_world_size: int | None = None,
) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` in ``world_size`` fresh processes and return their results by rank.

    Each process gets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
    ``MASTER_ADDR=127.0.0.1`` and a free ``MASTER_PORT``; with ``init=True`` (default) the default
    process group is initialised (``backend``; ``None`` picks nccl with CUDA) before ``fn`` runs and
    destroyed after. ``fn`` must be picklable (a module-level function). Each rank installs the
    :mod:`shared.comm` hooks first, so ``record_comm`` sees libraries started inside ``fn``.

    If any rank raises or exits abnormally the others are killed and :class:`SpawnError` is raised
    with the first failing rank's traceback; if the ranks do not all finish within ``timeout_s``
    they are killed and :class:`SpawnTimeout` is raised. No process outlives the call.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    base_env = {
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(local_world_size or world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(find_free_port()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        **(dict(env) if env else {}),
    }
    procs = []
    for rank in range(world_size):
        p = ctx.Process(
            target=_child,
            args=(
                fn,
                rank,
                world_size,
                tuple(args),
                dict(kwargs or {}),
                base_env,
                init,
                backend,
                timeout_s,
                results,
            ),
            daemon=False,
        )
        p.start()
        procs.append(p)
    outputs: dict[int, Any] = {}
    failure: str | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while len(outputs) < world_size and failure is None:
            try:
                rank, status, payload = results.get(timeout=0.05)
            except _queue.Empty:
                dead = [
                    (i, p.exitcode)
                    for i, p in enumerate(procs)
                    if p.exitcode not in (None, 0) and i not in outputs
                ]
                if dead:
                    # give a dying rank a moment to deliver its traceback
                    try:
                        rank, status, payload = results.get(timeout=1.0)
                    except _queue.Empty:
                        i, code = dead[0]
                        failure = f"rank {i} exited with code {code} without reporting"
                        break
                elif time.monotonic() > deadline:
                    missing = sorted(set(range(world_size)) - set(outputs))
                    raise SpawnTimeout(
                        f"ranks {missing} did not finish within {timeout_s:.0f}s; all killed"
                    ) from None
                else:
                    continue
            if status == "ok":
                outputs[rank] = pickle.loads(payload)
            else:
                failure = f"rank {rank} failed:\n{payload}"
        if failure is not None:
            raise SpawnError(failure)
        for p in procs:
            p.join(timeout=max(1.0, deadline - time.monotonic()))
        return [outputs[r] for r in range(world_size)]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)
        results.close()
        results.join_thread()
