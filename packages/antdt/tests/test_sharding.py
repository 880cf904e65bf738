"""The shard state machine: property tests over random interleavings, fencing, WAIT/END, retry
limit, snapshot/restore, and the synchronous step planner."""

from __future__ import annotations

import json

import pytest
from antdt.sharding import (
    END,
    WAIT,
    Lease,
    OffsetMismatchError,
    RetryLimitExceeded,
    ShardConfig,
    ShardError,
    ShardService,
    StaleLeaseError,
    allocate,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WORKERS = ("w0", "w1", "w2")


class Model:
    """Drives a ShardService with random ops and tracks what was applied (a commit accepted as
    new), as a trainer holding the model would."""

    def __init__(self, cfg: ShardConfig) -> None:
        self.svc = ShardService(cfg)
        self.cfg = cfg
        self.now = 0.0
        self.leases: dict[str, list[list]] = {w: [] for w in WORKERS}  # [lease, next_off]
        self.applied: list[int] = []
        self.snap: tuple[dict, int] | None = None

    def check(self) -> None:
        assert len(self.applied) == len(set(self.applied)), "a sample was applied twice"
        c = self.svc.counts()
        assert c["committed_samples"] == len(self.applied)
        assert c["todo"] + c["doing"] + c["done"] + c["failed"] == len(self.svc._shards)

    def op(self, kind: int, w: str, n: int) -> None:
        svc = self.svc
        if kind == 0:  # acquire
            r = svc.acquire(w, self.now)
            if isinstance(r, Lease):
                self.leases[w].append([r, r.start])
        elif kind == 1 and self.leases[w]:  # commit a prefix of the oldest lease
            entry = self.leases[w][0]
            lease, a = entry
            b = min(lease.end, a + n)
            try:
                res = svc.commit(lease.shard_id, lease.lease_id, lease.generation, a, b, self.now)
            except StaleLeaseError:
                self.leases[w].pop(0)  # presumed dead: its result is discarded
                return
            if not res.duplicate:
                self.applied.extend((lease.epoch, i) for i in range(a, b))
            entry[1] = b
            if b == lease.end:
                self.leases[w].pop(0)
        elif kind == 2:  # the worker dies (its leases expire later or are failed now)
            self.leases[w] = []
            if n % 2:
                svc.fail_worker(w)
        elif kind == 3:  # time passes
            self.now += n * 0.5
            for ww in WORKERS:
                if n % 3 == 0:
                    svc.heartbeat(ww, self.now)
        elif kind == 4:  # snapshot (the checkpoint)
            self.snap = (json.loads(json.dumps(svc.snapshot())), len(self.applied))
        elif kind == 5 and self.snap is not None:  # restore: the model rolls back too
            snap, k = self.snap
            svc.restore(snap)
            self.applied = self.applied[:k]
            self.leases = {ww: [] for ww in WORKERS}

    def drain(self) -> None:
        for _ in range(10_000):
            r = self.svc.acquire("drainer", self.now)
            if r is END:
                return
            if r is WAIT:
                self.now += self.cfg.lease_timeout_s + 1  # wait for dead workers' leases
                continue
            self.svc.commit(r.shard_id, r.lease_id, r.generation, r.start, r.end, self.now)
            self.applied.extend((r.epoch, i) for i in range(r.start, r.end))
        raise AssertionError("did not drain")


ops = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(WORKERS), st.integers(1, 9)), max_size=80
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=ops,
    n=st.integers(1, 60),
    shard=st.integers(1, 9),
    epochs=st.integers(1, 2),
    shuffle=st.booleans(),
)
def test_random_interleavings_keep_exactly_once(ops, n, shard, epochs, shuffle):
    cfg = ShardConfig(n, shard, epochs, shuffle, seed=3, lease_timeout_s=2.0, max_retries=1000)
    m = Model(cfg)
    for kind, w, k in ops:
        m.op(kind, w, k)
        m.check()
    m.drain()
    m.check()
    # every sample of every epoch exactly once
    assert sorted(m.applied) == [(e, i) for e in range(epochs) for i in range(n)]
    assert m.svc.finished()


def test_wait_then_requeued_shard_is_drained():
    svc = ShardService(ShardConfig(20, 10, lease_timeout_s=1.0))
    a = svc.acquire("a", 0.0)
    b = svc.acquire("b", 0.0)
    svc.commit(b.shard_id, b.lease_id, b.generation, b.start, b.end, 0.1)
    svc.commit(a.shard_id, a.lease_id, a.generation, a.start, a.start + 3, 0.2)
    # a dies; b finds nothing queued but a's shard is still leased: WAIT, not END
    assert svc.acquire("b", 0.5) is WAIT
    r = svc.acquire("b", 5.0)  # a's lease expired
    assert isinstance(r, Lease) and r.shard_id == a.shard_id and r.start == a.start + 3
    with pytest.raises(StaleLeaseError):  # the zombie cannot commit any more
        svc.commit(a.shard_id, a.lease_id, a.generation, a.start + 3, a.end, 5.0)
    svc.commit(r.shard_id, r.lease_id, r.generation, r.start, r.end, 5.1)
    assert svc.acquire("b", 5.2) is END


def test_commit_fencing_and_idempotence():
    svc = ShardService(ShardConfig(10, 10))
    lease = svc.acquire("w", 0)
    ok = svc.commit(lease.shard_id, lease.lease_id, 0, 0, 4, 0)
    assert (ok.committed, ok.duplicate) == (4, False)
    again = svc.commit(lease.shard_id, lease.lease_id, 0, 0, 4, 0)
    assert again.duplicate and again.committed == 4
    with pytest.raises(OffsetMismatchError):
        svc.commit(lease.shard_id, lease.lease_id, 0, 5, 7, 0)  # a gap
    with pytest.raises(ValueError, match="not a non-empty part"):
        svc.commit(lease.shard_id, lease.lease_id, 0, 4, 11, 0)  # beyond the shard
    with pytest.raises(ValueError, match="unknown shard"):
        svc.commit(99, lease.lease_id, 0, 0, 1, 0)
    with pytest.raises(StaleLeaseError):
        svc.commit(lease.shard_id, lease.lease_id + 1, 0, 4, 5, 0)  # not this lease
    snap = svc.snapshot()
    svc.restore(snap)
    with pytest.raises(StaleLeaseError, match="generation"):
        svc.commit(lease.shard_id, lease.lease_id, 0, 4, 5, 0)  # from before the restore


def test_retry_limit_surfaces_as_error_not_a_drop():
    svc = ShardService(ShardConfig(10, 5, max_retries=2))
    for _ in range(3):
        svc.acquire("bad", 0)
        svc.fail_worker("bad")  # dies without progress
    with pytest.raises(RetryLimitExceeded, match="refusing to drop"):
        svc.acquire("good", 0)
    # a worker that makes progress before dying does not count as a failure
    svc2 = ShardService(ShardConfig(10, 10, max_retries=0))
    lease = svc2.acquire("w", 0)
    svc2.commit(lease.shard_id, lease.lease_id, 0, 0, 1, 0)
    svc2.fail_worker("w")
    assert isinstance(svc2.acquire("w2", 0), Lease)


def test_snapshot_rejects_tampering():
    svc = ShardService(ShardConfig(30, 10))
    snap = svc.snapshot()
    other = ShardService(ShardConfig(31, 10))
    with pytest.raises(ValueError, match="config"):
        other.restore(snap)
    bad = json.loads(json.dumps(snap))
    bad["shards"][1][1] = 999  # committed offset outside the shard
    with pytest.raises(ValueError, match="outside"):
        svc.restore(bad)
    with pytest.raises(ValueError, match="lacks"):
        svc.restore({"version": 1})
    with pytest.raises(ValueError):
        svc.restore([1, 2])  # type: ignore[arg-type]


def test_config_validation():
    with pytest.raises(ValueError, match="dataset_size"):
        ShardConfig(0)
    with pytest.raises(ValueError, match="lease_timeout_s"):
        ShardConfig(10, lease_timeout_s=0)
    with pytest.raises(ValueError, match="worker id"):
        ShardService(ShardConfig(10)).acquire("")


# ---------------------------------------------------------------------- sync planner


@given(total=st.integers(1, 5000), w=st.lists(st.floats(0.1, 10), min_size=1, max_size=6))
def test_allocate_sums_and_is_proportional(total, w):
    if total < len(w):
        return
    b = allocate(total, w, minimum=1)
    assert sum(b) == total and min(b) >= 1
    s = sum(w)
    exact = [total * wi / s for wi in w]
    if min(exact) >= 1:  # no minimum binds: within one sample of the exact share
        assert all(abs(bi - e) < 1 + 1e-9 for bi, e in zip(b, exact, strict=True))


def test_plan_is_cached_disjoint_and_changes_apply_at_one_step():
    svc = ShardService(ShardConfig(100, 7))
    svc.set_sizes([3, 5], 0)
    p0 = svc.plan_step(0, 2)
    assert svc.plan_step(0, 2) is p0  # every rank gets the same plan
    assert p0.sizes == (3, 5) and p0.indices(0) == [0, 1, 2] and p0.indices(1) == list(range(3, 8))
    eff = svc.set_sizes([6, 2])  # decided while step 0 is planned: takes effect at step 1
    assert eff == 1
    p1 = svc.plan_step(1, 2)
    assert p1.sizes == (6, 2) and p1.indices(0) == list(range(8, 14))
    with pytest.raises(ShardError, match="asked before"):
        svc.plan_step(5, 2)
    with pytest.raises(OffsetMismatchError):
        svc.commit_step(1, 0)  # out of order
    svc.commit_step(0, 0)
    assert svc.commit_step(0, 0).duplicate
    with pytest.raises(ValueError, match="for 2 ranks"):
        svc.plan_step(2, 3)


def test_sync_restore_replays_identical_plans_and_final_partial_step():
    def run(restore_at: int | None) -> list:
        svc = ShardService(ShardConfig(50, 6, num_epochs=2, shuffle=True, seed=1))
        svc.set_sizes([4, 3], 0)
        plans, snap, step = [], None, 0
        while True:
            p = svc.plan_step(step, 2)
            if p.end_of_data:
                break
            if restore_at is not None and step == restore_at + 2:
                svc.plan_step(step + 1, 2)  # an uncommitted plan in flight, then a crash
                svc.restore(snap)
                restore_at, step = None, int(snap["committed_step"]) + 1
                plans = plans[:step]
                continue
            plans.append((p.sizes, p.indices(0), p.indices(1)))
            svc.commit_step(step, p.generation)
            if restore_at is not None and step == restore_at:
                snap = json.loads(json.dumps(svc.snapshot()))
            step += 1
        assert svc.finished()
        return plans

    ref = run(None)
    assert run(3) == ref
    flat = [i for _, a, b in ref for i in a + b]
    assert sorted(flat) == sorted(list(range(50)) * 2)
    assert sum(ref[-1][0]) == 100 % 7  # the last step is the remainder, split proportionally
