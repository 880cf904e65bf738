"""Run an SPMD ``torch.distributed`` program on Ray: one actor per rank in a placement group.

:func:`ray_run` is the Ray counterpart of :func:`shared.spawn` / torchrun, as OpenRLHF and verl
use Ray: a placement group with one bundle per rank (``{"CPU": 1}``, or ``{"GPU": 1, "CPU": 1}``
with CUDA), one actor per bundle, the default process group initialised at the address of rank
0's node. On a Ray cluster (``address=...``) the bundles may land on different machines
(``strategy="SPREAD"`` or ``"PACK"``).

Each actor gets torchrun's environment, so a program written for torchrun runs unchanged:
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``GROUP_RANK`` (the index of the
actor's node), ``LOCAL_RANK=0`` and ``LOCAL_WORLD_SIZE=1`` (Ray gives each GPU actor its own
``CUDA_VISIBLE_DEVICES``, so its device is ``cuda:0``), and torchrun's elastic counters
``TORCHELASTIC_RUN_ID``, ``TORCHELASTIC_RESTART_COUNT`` and ``TORCHELASTIC_MAX_RESTARTS``.

Failures follow torchrun's elastic agent: when any rank fails (its process dies or ``fn``
raises), every rank of the group is stopped and, while ``max_restarts`` allows, the whole group
is started again with ``TORCHELASTIC_RESTART_COUNT`` incremented (programs resume from their own
checkpoints). Past the limit :class:`RayRunError` is raised with the failing rank and its cause.

Needs Ray (``pip install "shared[ray]"``); Ray is imported only when :func:`ray_run` is called.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["RayRunError", "init_ray", "ray_available", "ray_run"]


class RayRunError(RuntimeError):
    """A rank failed and no restart was left (``rank``, ``attempts`` and the ``cause`` text)."""

    def __init__(self, message: str, *, rank: int, attempts: int, cause: str) -> None:
        super().__init__(message)
        self.rank, self.attempts, self.cause = rank, attempts, cause


def ray_available() -> bool:
    """True when Ray can be imported."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def init_ray(
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    install_hint: str = 'pip install "shared[ray]"',
) -> bool:
    """Start a Ray runtime unless one is running: a local one with ``num_cpus`` logical CPUs, or
    a connection to the cluster at ``address``. Returns True when this call started it (the caller
    then shuts it down). Ranks get ``OMP_NUM_THREADS=1``, as torchrun gives them."""
    try:
        import ray
    except ImportError as e:
        raise ModuleNotFoundError(f"Ray is not installed: {install_hint}") from e
    if ray.is_initialized():
        return False
    ray.init(
        address=address,
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        log_to_driver=True,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
    )
    return True


class _Rank:
    """One process per rank (wrapped by ``ray.remote`` at run time)."""

    def node_address(self) -> str:
        import ray

        return ray.util.get_node_ip_address()

    def free_port(self, host: str) -> int:
        from shared.distributed import find_free_port

        return find_free_port(host)

    def run(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        env: Mapping[str, str],
        init: bool,
        backend: str | None,
        timeout_s: float,
    ) -> Any:
        os.environ.update(env)
        from shared.comm import install_comm_hooks
        from shared.distributed import destroy_distributed, init_distributed

        install_comm_hooks()
        if init:
            init_distributed(backend, timeout_s=timeout_s)
        try:
            return fn(*args, **kwargs)
        finally:
            if init:
                destroy_distributed()


def ray_run(
    fn: Callable[..., Any],
    world_size: int,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    init: bool = True,
    backend: str | None = None,
    timeout_s: float = 600.0,
    max_restarts: int = 0,
    num_cpus: int | None = None,
    strategy: str = "PACK",
    address: str | None = None,
    run_id: str | None = None,
) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` on ``world_size`` Ray actors and return the results by rank.

    ``init=True`` initialises the default process group before ``fn`` (``backend``: ``None`` picks
    nccl with CUDA, else gloo) and destroys it after. ``env`` is added to every rank's
    environment. ``timeout_s`` bounds each attempt. Starts a local Ray runtime (``num_cpus``
    logical CPUs, default ``world_size``) unless one is running or ``address`` names a cluster,
    and shuts down only a runtime it started. No actor outlives the call.
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
    if strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
        raise ValueError(
            f"strategy must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, got {strategy!r}"
        )
    started = init_ray(address=address, num_cpus=num_cpus or world_size)
    import ray
    import torch
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    use_gpu = torch.cuda.is_available() and backend != "gloo"
    bundle = {"GPU": 1, "CPU": 1} if use_gpu else {"CPU": 1}
    run_id = run_id or uuid.uuid4().hex[:12]
    pg = placement_group([dict(bundle) for _ in range(world_size)], strategy=strategy)
    try:
        ray.get(pg.ready(), timeout=timeout_s)
        remote = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0, max_restarts=0)(_Rank)
        for attempt in range(max_restarts + 1):
            actors = [
                remote.options(
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        placement_group=pg, placement_group_bundle_index=i
                    )
                ).remote()
                for i in range(world_size)
            ]
            try:
                nodes = ray.get([a.node_address.remote() for a in actors], timeout=timeout_s)
                port = ray.get(actors[0].free_port.remote(nodes[0]), timeout=timeout_s)
                order = list(dict.fromkeys(nodes))
                base = {
                    "MASTER_ADDR": nodes[0],
                    "MASTER_PORT": str(port),
                    "WORLD_SIZE": str(world_size),
                    "LOCAL_RANK": "0",
                    "LOCAL_WORLD_SIZE": "1",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                    "TORCHELASTIC_RUN_ID": run_id,
                    "TORCHELASTIC_RESTART_COUNT": str(attempt),
                    "TORCHELASTIC_MAX_RESTARTS": str(max_restarts),
                    **(dict(env) if env else {}),
                }
                futures = [
                    a.run.remote(
                        fn,
                        tuple(args),
                        dict(kwargs or {}),
                        {**base, "RANK": str(r), "GROUP_RANK": str(order.index(nodes[r]))},
                        init,
                        backend,
                        timeout_s,
                    )
                    for r, a in enumerate(actors)
                ]
                failed = _wait_all(ray, futures, timeout_s)
                if failed is None:
                    return ray.get(futures)
                rank, cause = failed
            finally:
                for a in actors:
                    ray.kill(a, no_restart=True)
            if attempt == max_restarts:
                raise RayRunError(
                    f"rank {rank} failed after {attempt + 1} attempt(s) "
                    f"(max_restarts={max_restarts}): {cause}",
                    rank=rank,
                    attempts=attempt + 1,
                    cause=cause,
                )
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        remove_placement_group(pg)
        if started:
            ray.shutdown()


def _wait_all(ray: Any, futures: list[Any], timeout_s: float) -> tuple[int, str] | None:
    """Wait for every rank; return ``(rank, cause)`` of the first failure, or ``None``."""
    index = {f: r for r, f in enumerate(futures)}
    pending = list(futures)
    deadline = time.monotonic() + timeout_s
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            return index[pending[0]], f"timed out after {timeout_s:g} s"
        done, pending = ray.wait(pending, num_returns=1, timeout=min(left, 1.0))
        for f in done:
            try:
                ray.get(f)
            except ray.exceptions.RayActorError as e:
                return index[f], f"its process died ({type(e).__name__}: {_summary(e)})"
            except ray.exceptions.RayTaskError as e:
                return index[f], f"it raised {_summary(e)}"
    return None


def _summary(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
