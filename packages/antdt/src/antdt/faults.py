"""Fault experiments with real processes (tests, bench, demo).

* :func:`kill_workers_trial`: a master plus async worker processes (:mod:`antdt.worker`); workers
  are SIGKILLed at seeded random moments (mid-shard) and replaced. Returns how often each sample
  was applied (from the master's log of accepted commits).
* :func:`master_restart_trial`: the master is stopped mid-run and a new one restored from a
  snapshot on the same port; the samples applied after the snapshot are rolled back (the model
  would be restored from the same checkpoint); workers carry on.
* :func:`at_least_once_trial`: the DLRover-style baseline under the same seeded kill pattern
  (simulated in process: batches are applied as trained, a failed shard is re-queued whole).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

from .baselines import AtLeastOnceShardService
from .master import Master, MasterConfig
from .sharding import END, WAIT, ShardConfig

__all__ = ["FaultResult", "at_least_once_trial", "kill_workers_trial", "master_restart_trial"]


@dataclass
class FaultResult:
    n: int
    kills: int
    missing: int
    duplicated: int
    seconds: float = 0.0

    @property
    def exactly_once(self) -> bool:
        return self.missing == 0 and self.duplicated == 0


def _count(n: int, ranges: list[tuple[int, int]]) -> tuple[int, int]:
    c: Counter[int] = Counter()
    for a, b in ranges:
        c.update(range(a, b))
    missing = sum(1 for i in range(n) if c[i] == 0)
    dup = sum(v - 1 for v in c.values() if v > 1)
    return missing, dup


def _start_worker(address: str, wid: str, batch_seconds: float) -> subprocess.Popen:
    env = {**os.environ, "ANTDT_MASTER_ADDR": address}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "antdt.worker",
            "--worker-id",
            wid,
            "--batch-seconds",
            str(batch_seconds),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def kill_workers_trial(
    seed: int,
    *,
    n: int = 3000,
    shard_size: int = 50,
    workers: int = 3,
    kills: int = 3,
    batch_seconds: float = 0.004,
    lease_timeout_s: float = 0.8,
    timeout_s: float = 240.0,
) -> FaultResult:
    rng = random.Random(seed)
    cfg = MasterConfig(
        ShardConfig(n, shard_size, lease_timeout_s=lease_timeout_s), record_commits=True
    )
    t0 = time.monotonic()
    with Master(cfg) as m:
        svc = m.service
        procs = {f"w{i}": _start_worker(m.address, f"w{i}", batch_seconds) for i in range(workers)}
        all_procs = list(procs.values())
        next_id, done_kills = workers, 0
        try:
            # kill when a seeded fraction of the data is committed (so every kill is mid-run)
            marks = sorted(rng.uniform(0.1, 0.8) for _ in range(kills))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                c = svc.counts()
                if done_kills < kills and c["committed_samples"] >= marks[done_kills] * n:
                    victim = rng.choice(sorted(procs))
                    procs.pop(victim).kill()  # SIGKILL, mid-shard
                    done_kills += 1
                    wid = f"w{next_id}"
                    next_id += 1
                    procs[wid] = _start_worker(m.address, wid, batch_seconds)
                    all_procs.append(procs[wid])
                if svc.finished() and all(p.poll() is not None for p in procs.values()):
                    break
                time.sleep(0.01)
            else:
                raise TimeoutError(
                    f"kill trial {seed} did not finish in {timeout_s}s: {svc.counts()}"
                )
        finally:
            _reap(all_procs)
        missing, dup = _count(n, [(a, b) for a, b, _ in svc.commit_log])
    return FaultResult(n, done_kills, missing, dup, time.monotonic() - t0)


def master_restart_trial(
    seed: int,
    *,
    n: int = 3000,
    shard_size: int = 50,
    workers: int = 2,
    batch_seconds: float = 0.004,
    timeout_s: float = 240.0,
) -> FaultResult:
    rng = random.Random(seed)
    snap_at, crash_at = sorted(rng.uniform(0.15, 0.7) for _ in range(2))
    shard = ShardConfig(n, shard_size, lease_timeout_s=0.8)
    t0 = time.monotonic()
    a = Master(MasterConfig(shard, record_commits=True))
    port = a.start()
    procs = [_start_worker(a.address, f"w{i}", batch_seconds) for i in range(workers)]
    try:
        deadline = time.monotonic() + timeout_s
        snap = None
        kept: list[tuple[int, int]] = []
        while time.monotonic() < deadline:
            done = a.service.counts()["committed_samples"]
            if snap is None and done >= snap_at * n:
                with a.service._lock:  # the checkpoint: service snapshot + model state together
                    snap = a.service.snapshot()
                    kept = [(x, y) for x, y, _ in a.service.commit_log]
            if snap is not None and done >= crash_at * n:
                break
            time.sleep(0.005)
        a.stop(grace=0)  # the master dies mid-run
        b = Master(MasterConfig(shard, port=port, record_commits=True))
        for _ in range(100):
            try:
                b.start()
                break
            except (OSError, RuntimeError):
                time.sleep(0.1)
        b.service.restore(snap)
        try:
            while time.monotonic() < deadline:
                if b.service.finished() and all(p.poll() is not None for p in procs):
                    break
                time.sleep(0.01)
            else:
                raise TimeoutError(
                    f"master restart trial {seed} did not finish: {b.service.counts()}"
                )
            log = kept + [(x, y) for x, y, _ in b.service.commit_log]
        finally:
            b.stop()
    finally:
        a.stop()
        _reap(procs)
    missing, dup = _count(n, log)
    return FaultResult(n, 1, missing, dup, time.monotonic() - t0)


def at_least_once_trial(
    seed: int,
    *,
    n: int = 3000,
    shard_size: int = 50,
    workers: int = 3,
    kills: int = 3,
    batch: int = 10,
) -> FaultResult:
    """Same seeded kill marks as :func:`kill_workers_trial`, DLRover semantics."""
    rng = random.Random(seed)
    marks = sorted(rng.uniform(0.1, 0.8) for _ in range(kills))
    svc = AtLeastOnceShardService(ShardConfig(n, shard_size))
    applied: list[tuple[int, int]] = []
    held: dict[str, tuple[int, int, int] | None] = {f"w{i}": None for i in range(workers)}
    next_id, done_kills, trained = workers, 0, 0
    while True:
        progressed = False
        for w in sorted(held):
            cur = held.get(w)
            if cur is None:
                r = svc.acquire(w)
                if r is END or r is WAIT:
                    continue
                sid, (a, b) = r
                cur = (sid, a, b)
            sid, a, b = cur
            e = min(b, a + batch)
            applied.append((a, e))  # trained and pushed: at-least-once applies at once
            trained += e - a
            progressed = True
            held[w] = None if e == b else (sid, e, b)
            if e == b:
                svc.report_done(sid)
            if done_kills < kills and trained >= marks[done_kills] * n:
                victim = rng.choice(sorted(held))
                held.pop(victim)
                svc.fail_worker(victim)
                done_kills += 1
                held[f"w{next_id}"] = None
                next_id += 1
        if not progressed and not svc.todo:
            break
    missing, dup = _count(n, applied)
    return FaultResult(n, done_kills, missing, dup)
