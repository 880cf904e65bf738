"""Ray backend: device groups scheduled by a Ray placement group (as OpenRLHF and verl do).

One bundle per device (``{"CPU": 1}``, or ``{"GPU": 1}`` with CUDA) in a placement group; one Ray
actor per bundle hosts that device's shards of the models the placement puts there, joins the
torch.distributed job (rank = bundle index, rendezvous at the address of bundle 0's node), and
runs the same SPMD program as the torchrun backend. On a Ray cluster spanning machines the
bundles may land on different nodes (``strategy="SPREAD"`` or ``"PACK"``).

Needs the ``ray`` extra (``pip install "rlhf-place[ray]"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ray_run"]


class _Worker:
    """One process per device (wrapped by ``ray.remote`` at run time)."""

    def node_address(self) -> str:
        import ray

        return ray.util.get_node_ip_address()

    def free_port(self) -> int:
        from shared import find_free_port

        return find_free_port("0.0.0.0")

    def run(self, fn: Callable, args: Sequence[Any], env: dict[str, str], backend: str) -> Any:
        os.environ.update(env)
        from shared import destroy_distributed, init_distributed, install_comm_hooks

        install_comm_hooks()
        init_distributed(backend, timeout_s=float(env.get("RLHF_PLACE_PG_TIMEOUT", "300")))
        try:
            return fn(*args)
        finally:
            destroy_distributed()


def ray_run(
    fn: Callable,
    world_size: int,
    args: Sequence[Any],
    *,
    timeout_s: float = 600.0,
    num_cpus: int | None = None,
    strategy: str = "PACK",
    address: str | None = None,
) -> list[Any]:
    """Run ``fn(*args)`` on ``world_size`` Ray actors of one placement group; results by rank.

    Starts a local Ray runtime (``num_cpus`` logical CPUs, default ``world_size``) unless one is
    running or ``address`` names a cluster; shuts down only a runtime it started.
    """
    try:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise ModuleNotFoundError('the Ray backend needs ray: pip install "rlhf-place[ray]"') from e
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    started = False
    if not ray.is_initialized():
        env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        ray.init(
            address=address,
            num_cpus=None if address else (num_cpus or world_size),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env},
        )
        started = True
    import torch

    use_gpu = torch.cuda.is_available()
    bundle = {"GPU": 1, "CPU": 1} if use_gpu else {"CPU": 1}
    pg = placement_group([dict(bundle) for _ in range(world_size)], strategy=strategy)
    try:
        ray.get(pg.ready(), timeout=timeout_s)
        remote = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0)(_Worker)
        workers = [
            remote.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=i
                )
            ).remote()
            for i in range(world_size)
        ]
        master = ray.get(workers[0].node_address.remote(), timeout=timeout_s)
        port = ray.get(workers[0].free_port.remote(), timeout=timeout_s)
        base = {
            "MASTER_ADDR": master,
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world_size),
            "OMP_NUM_THREADS": "1",
            "RLHF_PLACE_PG_TIMEOUT": str(timeout_s),
        }
        futures = [
            w.run.remote(
                fn,
                tuple(args),
                # Ray gives each actor its own GPU (CUDA_VISIBLE_DEVICES): local rank 0
                {**base, "RANK": str(i), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"},
                "nccl" if use_gpu else "gloo",
            )
            for i, w in enumerate(workers)
        ]
        results = ray.get(futures, timeout=timeout_s)
        for w in workers:
            ray.kill(w)
        return results
    finally:
        remove_placement_group(pg)
        if started:
            ray.shutdown()
