"""Faults with real processes: async workers SIGKILLed mid-shard (seeded, several trials), the
master restarted from its snapshot; the DLRover-style baseline duplicates under the same kills."""

from __future__ import annotations

import pytest
from antdt.faults import at_least_once_trial, kill_workers_trial, master_restart_trial


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_workers_exactly_once(seed):
    r = kill_workers_trial(seed, n=1500, shard_size=40, workers=2, kills=2)
    assert r.kills == 2
    assert (r.missing, r.duplicated) == (0, 0)


def test_master_restart_from_snapshot_exactly_once():
    r = master_restart_trial(0, n=1500, shard_size=40)
    assert (r.missing, r.duplicated) == (0, 0)


def test_at_least_once_baseline_duplicates_under_the_same_kills():
    r = at_least_once_trial(0, n=1500, shard_size=40, workers=2, kills=2)
    assert r.missing == 0 and r.duplicated > 0


def test_at_least_once_baseline_drops_after_three_retries():
    from antdt.baselines import AtLeastOnceShardService
    from antdt.sharding import ShardConfig

    svc = AtLeastOnceShardService(ShardConfig(10, 10))
    for _ in range(4):
        svc.acquire("w")
        svc.fail_worker("w")
    assert svc.dropped == [0] and not svc.todo  # DLRover's silent data loss, for contrast
