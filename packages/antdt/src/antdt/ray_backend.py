"""AntDT on Ray: the master as a Ray actor, the training ranks as Ray actors.

The ranks run through :func:`shared.rayrun.ray_run`: one actor per rank in a placement group,
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``..., and the elastic counters
``TORCHELASTIC_RESTART_COUNT`` / ``TORCHELASTIC_MAX_RESTARTS``), and torchrun's elastic-agent
semantics: when a rank fails, the whole group is started again, up to ``max_restarts`` times. So
the agent's KILL_RESTART (checkpoint, barrier, exit) and an injected kill behave exactly as under
torchrun: the restarted ranks resume from the checkpoint and the master's snapshot.

The master (shard service, monitor, controller) is one more Ray actor holding the gRPC server in
its own process (it needs no CPU reservation: ``num_cpus=0``). On one machine it binds 127.0.0.1.
On a multi-node Ray cluster the ranks must reach it over the network, so its config must bind a
routable host (``"0.0.0.0"``) with a token, which the ranks receive in ``$ANTDT_TOKEN``;
checkpoints must then live on storage every node sees. ``detached=True`` with a ``master_name``
keeps the master alive after the driver exits (Ray's detached actors), so a later driver can
resume the same job.

Needs the ``ray`` extra (``pip install "antdt[ray]"``).
"""

from __future__ import annotations

from typing import Any

from .client import ENV_ADDR, ENV_TOKEN
from .job import JobConfig, run_job
from .master import MasterConfig, _is_loopback

__all__ = ["RayJobResult", "ray_train"]


class _MasterHost:
    """The master's process (wrapped by ``ray.remote`` at run time)."""

    def __init__(self, config: MasterConfig) -> None:
        from .master import Master

        self.master = Master(config)
        self.master.start()

    def address(self) -> str:
        import ray

        host = self.master.config.host
        if host in ("0.0.0.0", "::", ""):
            host = ray.util.get_node_ip_address()
        return f"{host}:{self.master.port}"

    def status(self) -> dict[str, Any]:
        return self.master.status(timeline=True)

    def stop(self) -> None:
        self.master.stop()


class RayJobResult(dict):
    """Rank 0's :func:`antdt.job.run_job` result, plus ``"master_status"`` (the master's status)."""


def ray_train(
    job: JobConfig,
    master: MasterConfig,
    world_size: int,
    *,
    max_restarts: int = 1,
    address: str | None = None,
    num_cpus: int | None = None,
    strategy: str = "PACK",
    timeout_s: float = 900.0,
    master_name: str | None = None,
    detached: bool = False,
) -> RayJobResult:
    """Train ``job`` on ``world_size`` Ray actors against a master actor; rank 0's result.

    Starts a local Ray runtime (``num_cpus`` logical CPUs, default ``world_size``) unless one is
    running or ``address`` names a cluster, and shuts down only a runtime it started. The master
    actor is stopped at the end unless ``detached``.
    """
    if master.controller is not None and master.controller.world_size != world_size:
        raise ValueError(
            f"the master's controller plans for world_size={master.controller.world_size}, "
            f"but {world_size} ranks were asked for"
        )
    if detached and not master_name:
        raise ValueError("a detached master needs a master_name to be found again")
    from shared.rayrun import init_ray, ray_run

    started = init_ray(
        address=address,
        num_cpus=num_cpus or world_size,
        install_hint='the Ray backend needs it: pip install "antdt[ray]"',
    )
    import ray

    try:
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) > 1 and _is_loopback(master.host):
            raise ValueError(
                f"this Ray cluster has {len(alive)} nodes but the master binds {master.host!r}: "
                "ranks on other nodes could not reach it; bind '0.0.0.0' with a token"
            )
        opts: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
        if master_name:
            opts["name"] = master_name
        if detached:
            opts["lifetime"] = "detached"
        host = ray.remote(_MasterHost).options(**opts).remote(master)
        try:
            addr = ray.get(host.address.remote(), timeout=timeout_s)
            env = {ENV_ADDR: addr}
            if master.token:
                env[ENV_TOKEN] = master.token
            per_rank = ray_run(
                run_job,
                world_size,
                args=(job, addr),
                env=env,
                backend="gloo",
                timeout_s=timeout_s,
                max_restarts=max_restarts,
                strategy=strategy,
            )
            out = RayJobResult(per_rank[0])
            out["master_status"] = ray.get(host.status.remote(), timeout=timeout_s)
            return out
        finally:
            if not detached:
                ray.get(host.stop.remote(), timeout=60)
                ray.kill(host, no_restart=True)
    finally:
        if started and not detached:
            ray.shutdown()
