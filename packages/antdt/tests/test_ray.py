"""AntDT on Ray (real Ray actors; slow: Ray's start-up and the restart take a minute or more): a SIGKILLed rank restarts the group and ends bit-identical.

The master runs as a Ray actor, the two ranks as Ray actors in a placement group
(``shared.rayrun``); rank 1 is killed at step 4, the group restarts with the elastic counter
raised, resumes from the checkpoint and the master's snapshot, and the final float64 parameters
equal an independent uninterrupted reference run bit for bit.
"""

from __future__ import annotations

import pytest
from antdt.job import JobConfig
from antdt.master import MasterConfig
from antdt.sharding import ShardConfig
from refimpl import reference_params


@pytest.mark.slow
def test_ray_killed_rank_restarts_bit_identical(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (extra 'ray')")
    from antdt.ray_backend import ray_train

    cfg = JobConfig(dataset_size=240, features=6, hidden=8, checkpoint_dir=str(tmp_path / "ck"),
                    checkpoint_every=3, inject=[{"kind": "kill", "rank": 1, "step": 4}])  # fmt: skip
    from antdt.controller import ControllerConfig

    master = MasterConfig(
        ShardConfig(240, 16), ControllerConfig(mode="off", global_batch=20, world_size=2)
    )
    out = ray_train(cfg, master, 2, max_restarts=1, timeout_s=600)
    assert out["restart_count"] == 1 and out["world_size"] == 2
    assert out["ranks"][0]["start_step"] == 3  # resumed after the step-2 checkpoint
    assert out["params_hex"] == reference_params(cfg, ShardConfig(240, 16), [10, 10])
    status = out["master_status"]
    assert status["finished"] and status["counts"]["committed_samples"] == 240


def test_ray_train_refuses_mismatched_world_and_unreachable_master():
    from antdt.controller import ControllerConfig
    from antdt.ray_backend import ray_train

    master = MasterConfig(
        ShardConfig(64, 16), ControllerConfig(mode="off", global_batch=8, world_size=4)
    )
    with pytest.raises(ValueError, match="world_size=4"):
        ray_train(JobConfig(dataset_size=64), master, 2)
    with pytest.raises(ValueError, match="master_name"):
        ray_train(JobConfig(dataset_size=64), MasterConfig(ShardConfig(64, 16)), 2, detached=True)


def test_cli_ray_backend_argument_errors(capsys, tmp_path):
    from antdt.__main__ import main

    assert main(["run", "--backend", "ray", "--dataset-size", "64"]) == 2
    assert "--job" in capsys.readouterr().err
    assert main(["run", "--backend", "ray", "--job", "{}", "--", "--nnodes", "2"]) == 2
    assert "torchrun arguments" in capsys.readouterr().err
    assert main(["run", "--backend", "ray", "--job", str(tmp_path / "missing.json"),
                 "--dataset-size", "64"]) == 2  # fmt: skip
    assert "missing.json" in capsys.readouterr().err
    assert main(["run", "--backend", "ray", "--job", '{"lr": -1}', "--dataset-size", "64"]) == 2
    assert "lr" in capsys.readouterr().err
