"""shared.rayrun: torchrun's environment and elastic restarts on Ray actors (real Ray processes)."""

from __future__ import annotations

import os

import pytest

from shared.rayrun import RayRunError, ray_available, ray_run


def test_bad_arguments_are_refused_before_ray_starts():
    with pytest.raises(ValueError, match="world_size"):
        ray_run(print, 0)
    with pytest.raises(ValueError, match="timeout_s"):
        ray_run(print, 1, timeout_s=0)
    with pytest.raises(ValueError, match="max_restarts"):
        ray_run(print, 1, max_restarts=-1)
    with pytest.raises(ValueError, match="strategy"):
        ray_run(print, 1, strategy="ANYWHERE")


def _env_and_sum(marker: str) -> dict:
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "TORCHELASTIC_RESTART_COUNT")
    return {
        "sum": float(t),
        "marker": os.environ["MARKER"] + marker,
        **{k: os.environ[k] for k in keys},
    }


def _dies_on_first_attempt(flag_dir: str) -> int:
    import torch.distributed as dist

    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    dist.barrier()
    if attempt == 0 and dist.get_rank() == 1:
        os._exit(75)  # the process vanishes, as a SIGKILLed rank would
    return attempt


def _raises() -> None:
    import torch.distributed as dist

    if dist.get_rank() == 1:
        raise KeyError("no such column")


@pytest.mark.slow
@pytest.mark.skipif(not ray_available(), reason="Ray is not installed (extra 'ray')")
def test_ray_run_environment_restarts_and_errors(tmp_path):
    import sys

    import ray
    import ray.cloudpickle

    # this test module is not importable in Ray's worker processes: ship its functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = ray_run(_env_and_sum, 2, args=("!",), env={"MARKER": "m"}, backend="gloo")
        assert [o["sum"] for o in out] == [3.0, 3.0]
        assert [o["RANK"] for o in out] == ["0", "1"]
        assert {o["WORLD_SIZE"] for o in out} == {"2"} and {o["LOCAL_RANK"] for o in out} == {"0"}
        assert {o["GROUP_RANK"] for o in out} == {"0"}  # one node
        assert {o["marker"] for o in out} == {"m!"}

        # a vanished rank restarts the whole group, with the attempt counter raised
        assert ray_run(_dies_on_first_attempt, 2, args=(str(tmp_path),), max_restarts=1) == [1, 1]
        with pytest.raises(RayRunError, match="rank 1 failed after 1 attempt") as e:
            ray_run(_dies_on_first_attempt, 2, args=(str(tmp_path),), max_restarts=0)
        assert e.value.rank == 1 and "died" in e.value.cause

        # an exception names the rank and the error, after the restarts are used up
        with pytest.raises(RayRunError, match="no such column") as e:
            ray_run(_raises, 2, max_restarts=1)
        assert e.value.rank == 1 and e.value.attempts == 2
    finally:
        ray.shutdown()
