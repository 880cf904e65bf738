"""Launching a placement on real processes: plain torchrun-style process groups, or Ray.

- :func:`train` with ``backend="torchrun"`` starts one process per device on this machine with
  :func:`shared.spawn` (the environment torchrun would give: ``RANK``, ``WORLD_SIZE``,
  ``MASTER_ADDR``...; gloo on CPU, nccl with CUDA). Under a real ``torchrun`` (one or many
  nodes) ``python -m rlhf_place train`` calls :func:`run_rank` in each process directly.
- ``backend="ray"`` schedules the same program on a Ray placement group (one bundle per device,
  one actor per device hosting that device's model shards), as OpenRLHF and verl do; see
  :func:`shared.rayrun.ray_run`.

Both run :func:`rlhf_place.runtime.run_rank`, so they give the same trajectory.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhf_place.config import RLHFConfig
from rlhf_place.placement import Placement
from rlhf_place.runtime import RunOptions, RunResult, check_compatible, merge_results, run_rank

__all__ = ["BACKENDS", "run_placements", "train"]

BACKENDS = ("torchrun", "ray")


def _many(rcfg: RLHFConfig, jobs: Sequence[tuple[Placement, RunOptions]], repeats: int) -> list:
    out = []
    for _ in range(repeats):
        out.append([run_rank(rcfg, p, o) for p, o in jobs])
    return out


def _env(opts: RunOptions) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(opts.threads), "TOKENIZERS_PARALLELISM": "false"}


def train(
    rcfg: RLHFConfig,
    placement: Placement,
    opts: RunOptions | None = None,
    *,
    backend: str = "torchrun",
    timeout_s: float = 600.0,
) -> RunResult:
    """Run ``rcfg.iterations`` PPO iterations under ``placement`` on ``placement.world_size``
    processes and return the merged :class:`~rlhf_place.runtime.RunResult`."""
    opts = opts or RunOptions()
    check_compatible(rcfg, placement)
    if backend == "torchrun":
        from shared import spawn

        per_rank = spawn(
            run_rank,
            placement.world_size,
            args=(rcfg, placement, opts),
            timeout_s=timeout_s,
            backend=None if opts.device == "cuda" else "gloo",
            env=_env(opts),
        )
    elif backend == "ray":
        from shared.rayrun import ray_run

        per_rank = ray_run(
            run_rank,
            placement.world_size,
            args=(rcfg, placement, opts),
            timeout_s=timeout_s,
            env=_env(opts),
            backend=None if opts.device == "cuda" else "gloo",
        )
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return merge_results(per_rank, placement, opts.engine)


def run_placements(
    rcfg: RLHFConfig,
    placements: Sequence[Placement | tuple[Placement, RunOptions]],
    opts: RunOptions | None = None,
    *,
    repeats: int = 1,
    timeout_s: float = 900.0,
) -> list[list[RunResult]]:
    """Run several placements (same world size; each with ``opts`` or its own options) in one
    set of processes, interleaved (P1 P2 P3 P1 P2 P3 ...), so load drift hits every strategy
    alike. Returns ``[repeat][placement] -> RunResult``."""
    from shared import spawn

    opts = opts or RunOptions()
    if not placements:
        raise ValueError("no placements to run")
    jobs = [p if isinstance(p, tuple) else (p, opts) for p in placements]
    worlds = {p.world_size for p, _ in jobs}
    if len(worlds) != 1:
        raise ValueError(f"placements must share one world size, got {sorted(worlds)}")
    devices = {o.device for _, o in jobs}
    if len(devices) != 1:
        raise ValueError("placements run together must use one device type")
    for p, _ in jobs:
        check_compatible(rcfg, p)
    per_rank = spawn(
        _many,
        worlds.pop(),
        args=(rcfg, jobs, repeats),
        timeout_s=timeout_s,
        backend=None if devices.pop() == "cuda" else "gloo",
        env=_env(opts),
    )
    return [
        [
            merge_results([rank_out[r][i] for rank_out in per_rank], p, o.engine)
            for i, (p, o) in enumerate(jobs)
        ]
        for r in range(repeats)
    ]
