import multiprocessing

import pytest
from _shared_workers import (
    all_reduce_rank,
    fail_on_rank,
    hard_exit_on_rank,
    node_groups,
    rank_info,
    sleep_forever,
)

from shared import SpawnError, SpawnTimeout, init_distributed, spawn

# A guard against hangs, not a speed check: starting 4 torch processes took over 60 s at load
# average 15 on the 2-core machine (test_spawn_collective_sums_over_ranks timed out there).
HANG_GUARD_S = 300


def test_spawn_runs_real_ranks_and_returns_results_in_rank_order():
    out = spawn(rank_info, 3, timeout_s=HANG_GUARD_S)
    assert [o["rank"] for o in out] == [0, 1, 2]
    assert all(o["world"] == 3 and o["backend"] == "gloo" and o["device"] == "cpu" for o in out)
    assert [o["env_rank"] for o in out] == [0, 1, 2]


def test_spawn_collective_sums_over_ranks():
    assert spawn(all_reduce_rank, 4, timeout_s=HANG_GUARD_S) == [6.0] * 4


def test_spawn_propagates_the_failing_ranks_exception():
    with pytest.raises(SpawnError, match=r"rank 2 failed:\nValueError: boom from rank 2"):
        spawn(fail_on_rank, 3, args=(2,), timeout_s=HANG_GUARD_S)


def test_spawn_times_out_and_kills_every_rank():
    with pytest.raises(SpawnTimeout, match="did not finish within"):
        spawn(sleep_forever, 2, timeout_s=3, init=False)
    assert multiprocessing.active_children() == []


def test_spawn_reports_a_rank_that_dies_without_an_exception():
    with pytest.raises(SpawnError, match="rank 1 exited with code 3"):
        spawn(hard_exit_on_rank, 2, args=(1,), timeout_s=60, init=False)


def test_spawn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="world_size"):
        spawn(rank_info, 0)
    with pytest.raises(ValueError, match="timeout_s"):
        spawn(rank_info, 1, timeout_s=0)


def test_node_groups_intra_and_inter():
    out = spawn(node_groups, 4, args=(2,), timeout_s=HANG_GUARD_S)
    assert [o["intra_ranks"] for o in out] == [(0, 1), (0, 1), (2, 3), (2, 3)]
    assert [o["inter_ranks"] for o in out] == [(0, 2), (1, 3), (0, 2), (1, 3)]
    assert [o["intra_sum"] for o in out] == [1.0, 1.0, 5.0, 5.0]
    assert [o["inter_sum"] for o in out] == [2.0, 4.0, 2.0, 4.0]
    assert [(o["node_index"], o["local_index"]) for o in out] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(o["num_nodes"] == 2 for o in out)


def test_node_groups_reject_a_size_that_does_not_divide_the_world():
    with pytest.raises(SpawnError, match="node_size=3 must be a positive divisor of the world"):
        spawn(node_groups, 4, args=(3,), timeout_s=HANG_GUARD_S)


def test_init_distributed_explains_missing_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match="RANK is not set: launch with torchrun"):
        init_distributed("gloo")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(RuntimeError, match=r"RANK=5 is outside \[0, WORLD_SIZE=2\)"):
        init_distributed("gloo")
    with pytest.raises(ValueError, match="backend must be"):
        init_distributed("mpi")
