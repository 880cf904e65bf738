"""Stateful Dynamic Data Sharding (AntDT Sec. "Stateful DDS"): the pure, thread-safe state machine.

The data set ``[0, dataset_size)`` is cut into small shards of ``shard_size`` consecutive sample
indices, one sequence of shards per epoch (optionally in a seeded shuffled order). Each shard is

* ``TODO``: queued;
* ``DOING``: leased (to a worker in *async* mode, to the step planner in *sync* mode) and carrying a
  **committed offset**: samples ``[start, committed)`` are trained and never handed out again;
* ``DONE``: every sample committed;
* ``FAILED``: its lease failed more than ``max_retries`` times without progress. This is surfaced
  as :class:`RetryLimitExceeded` on every later call, never a silent drop (DLRover drops such a
  shard with a log line; the paper asks for data integrity).

Two ways to consume it:

*Async* (AntDT-ND's dynamic sharding, PS-style or any worker pool): ``acquire`` returns a
:class:`Lease`, :data:`WAIT` (nothing queued but shards are still leased: one may come back) or
:data:`END` (nothing queued nor leased). ``commit`` is **fenced** (lease id and service generation
must match, ``from_off`` must equal the committed offset) and idempotent (a retried commit that was
already applied is acknowledged as a duplicate). Leases expire without heartbeats; the shard goes
back to the head of the queue at its committed offset, so a worker killed mid-shard loses nothing
and duplicates nothing.

*Sync* (BSP / DDP with per-rank batch sizes, AntDT-DD): ``plan_step(k)`` cuts the next global batch
from the shard sequence and splits it into per-rank index ranges by the current batch sizes; the
plan is cached, so every rank asking for step ``k`` gets the same answer and a size change applies
at the same step on every rank. ``commit_step(k)`` (after the optimizer step) advances the committed
offsets. ``snapshot`` drops uncommitted plans; saving it with the model checkpoint and restoring it
with the model resumes exactly (the restored plan sequence is identical).

Snapshots are plain JSON-able dicts (no pickle) and are validated on restore.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "END",
    "WAIT",
    "CommitResult",
    "Lease",
    "OffsetMismatchError",
    "RetryLimitExceeded",
    "ShardConfig",
    "ShardError",
    "ShardService",
    "ShardState",
    "StaleLeaseError",
    "StepPlan",
    "allocate",
]

SNAPSHOT_VERSION = 1


class ShardState(enum.IntEnum):
    TODO = 0
    DOING = 1
    DONE = 2
    FAILED = 3


class ShardError(RuntimeError):
    """Base class of the service's refusals."""


class StaleLeaseError(ShardError):
    """A commit from a lease that is no longer current (expired, re-leased, or pre-restore)."""


class OffsetMismatchError(ShardError):
    """A commit whose ``from_off`` is not the shard's committed offset (a gap or an overlap)."""


class RetryLimitExceeded(ShardError):
    """A shard failed more than ``max_retries`` times; the job must not silently drop it."""


class _Signal:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


WAIT = _Signal("WAIT")
END = _Signal("END")


@dataclass(frozen=True)
class ShardConfig:
    """The data set and lease policy of one sharding service.

    ``lease_timeout_s``: a leased shard whose worker sent no heartbeat or commit for this long goes
    back to the queue. ``max_retries``: how many failed leases without progress a shard may have
    before the job errors (a lease that committed something does not count as a failure).
    """

    dataset_size: int
    shard_size: int = 64
    num_epochs: int = 1
    shuffle: bool = False
    seed: int = 0
    lease_timeout_s: float = 10.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        for name in ("dataset_size", "shard_size", "num_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ShardConfig.{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(
                f"ShardConfig.max_retries must be an int >= 0, got {self.max_retries!r}"
            )
        if not self.lease_timeout_s > 0:
            raise ValueError(f"ShardConfig.lease_timeout_s must be > 0, got {self.lease_timeout_s}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_size": self.dataset_size,
            "shard_size": self.shard_size,
            "num_epochs": self.num_epochs,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "lease_timeout_s": self.lease_timeout_s,
            "max_retries": self.max_retries,
        }


@dataclass(frozen=True)
class Lease:
    """A shard handed to ``worker``: train samples ``[start, end)`` and commit them in order."""

    shard_id: int
    lease_id: int
    generation: int
    start: int
    end: int
    epoch: int
    worker: str


@dataclass(frozen=True)
class CommitResult:
    committed: int
    done: bool
    duplicate: bool = False


@dataclass(frozen=True)
class StepPlan:
    """The global batch of one synchronous step: ``ranges[r]`` = list of ``(start, end)`` for rank
    ``r``; ``sizes[r]`` = their total; ``restart_rank`` >= 0 asks that rank to be restarted before
    this step is trained (an AntDT-ND KILL_RESTART action), ``-1`` none."""

    step: int
    generation: int
    sizes: tuple[int, ...]
    ranges: tuple[tuple[tuple[int, int], ...], ...]
    end_of_data: bool = False
    restart_rank: int = -1

    @property
    def global_batch(self) -> int:
        return sum(self.sizes)

    def indices(self, rank: int) -> list[int]:
        out: list[int] = []
        for a, b in self.ranges[rank]:
            out.extend(range(a, b))
        return out


@dataclass
class _Shard:
    sid: int
    seq: int  # position in the global consumption order (epoch-major)
    epoch: int
    start: int
    end: int
    committed: int
    state: ShardState = ShardState.TODO
    retries: int = 0
    lease_id: int = -1
    worker: str = ""
    deadline: float = 0.0
    progressed: bool = False
    planned: int = 0  # sync mode: samples up to here are in some (uncommitted) plan


def allocate(total: int, weights: list[float] | tuple[float, ...], minimum: int = 0) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder, ties to the
    lower rank), then raise any below ``minimum`` by taking from the largest; they sum to
    ``total`` exactly (AntDT-DD's b_i = B * s_i / sum_j s_j)."""
    n = len(weights)
    if n == 0:
        raise ValueError("allocate needs at least one weight")
    if any(not (w > 0) for w in weights):
        raise ValueError(f"weights must be > 0, got {list(weights)}")
    if total < minimum * n:
        raise ValueError(f"cannot give {n} ranks at least {minimum} of {total}")
    s = float(sum(weights))
    raw = [total * w / s for w in weights]
    base = [int(x) for x in raw]
    left = total - sum(base)
    order = sorted(range(n), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[:left]:
        base[i] += 1
    for i in range(n):
        while base[i] < minimum:
            j = max(range(n), key=lambda k: (base[k], -k))
            base[j] -= 1
            base[i] += 1
    return base


@dataclass
class _SyncState:
    sizes: tuple[int, ...] = ()
    # scheduled size changes: list of (effective_step, sizes), applied when that step is planned
    schedule: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    restart: dict[int, int] = field(default_factory=dict)  # step -> rank
    plans: dict[int, StepPlan] = field(default_factory=dict)
    plan_shards: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    next_step: int = 0  # the next step that may be planned
    committed_step: int = -1


class ShardService:
    """The shard state machine (thread-safe; no I/O). See the module docstring."""

    def __init__(self, config: ShardConfig, *, record_commits: bool = False) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._generation = 0
        self._next_lease = 0
        self._shards: list[_Shard] = []
        self._todo: deque[int] = deque()
        self._doing: dict[int, _Shard] = {}
        self._failed: list[int] = []
        self._done = 0
        self._sync = _SyncState()
        self.record_commits = record_commits
        self.commit_log: list[tuple[int, int, str]] = []  # (from, to, worker) of applied commits
        self._build()

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        cfg = self.config
        n_per_epoch = -(-cfg.dataset_size // cfg.shard_size)
        seq = 0
        for epoch in range(cfg.num_epochs):
            order = list(range(n_per_epoch))
            if cfg.shuffle:
                random.Random(cfg.seed * 1_000_003 + epoch).shuffle(order)
            for j in order:
                a = j * cfg.shard_size
                b = min(cfg.dataset_size, a + cfg.shard_size)
                sid = epoch * n_per_epoch + j
                self._shards.append(_Shard(sid, seq, epoch, a, b, a, planned=a))
                seq += 1
        self._shards.sort(key=lambda s: s.sid)
        self._todo = deque(s.sid for s in sorted(self._shards, key=lambda s: s.seq))

    # ------------------------------------------------------------------ helpers
    @property
    def generation(self) -> int:
        return self._generation

    def _check_failed(self) -> None:
        if self._failed:
            s = self._shards[self._failed[0]]
            raise RetryLimitExceeded(
                f"shard {s.sid} (samples [{s.committed}, {s.end}) of epoch {s.epoch}) failed "
                f"{s.retries} times without progress (max_retries={self.config.max_retries}); "
                "refusing to drop it silently: fix the failing worker or raise max_retries"
            )

    def _shard(self, shard_id: int) -> _Shard:
        if not isinstance(shard_id, int) or not 0 <= shard_id < len(self._shards):
            raise ValueError(f"unknown shard id {shard_id!r} (0..{len(self._shards) - 1})")
        return self._shards[shard_id]

    def _requeue(self, s: _Shard) -> None:
        """DOING -> TODO at the committed offset (head of the queue), counting a failure."""
        self._doing.pop(s.sid, None)
        if not s.progressed:
            s.retries += 1
        s.lease_id, s.worker, s.progressed = -1, "", False
        if s.retries > self.config.max_retries:
            s.state = ShardState.FAILED
            self._failed.append(s.sid)
            return
        s.state = ShardState.TODO
        s.planned = s.committed
        self._todo.appendleft(s.sid)

    def expire(self, now: float | None = None) -> list[int]:
        """Re-queue async leases whose deadline passed; returns their shard ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            gone = [
                s for s in self._doing.values() if s.worker and s.worker != "" and s.deadline < now
            ]
            gone = [s for s in gone if not s.worker.startswith("@sync")]
            for s in sorted(gone, key=lambda s: -s.seq):
                self._requeue(s)
            return [s.sid for s in gone]

    # ------------------------------------------------------------------ async API
    def acquire(self, worker: str, now: float | None = None) -> Lease | _Signal:
        """Lease the next shard to ``worker``; :data:`WAIT` or :data:`END` when none is queued."""
        if not isinstance(worker, str) or not worker or worker.startswith("@"):
            raise ValueError(
                f"worker id must be a non-empty string not starting with '@', got {worker!r}"
            )
        now = time.monotonic() if now is None else now
        with self._lock:
            self.expire(now)
            self._check_failed()
            if self._sync.plans:
                raise ShardError("acquire() while synchronous step plans are pending")
            if not self._todo:
                return WAIT if self._doing else END
            s = self._shards[self._todo.popleft()]
            s.state = ShardState.DOING
            s.lease_id = self._next_lease
            self._next_lease += 1
            s.worker = worker
            s.deadline = now + self.config.lease_timeout_s
            s.progressed = False
            self._doing[s.sid] = s
            return Lease(s.sid, s.lease_id, self._generation, s.committed, s.end, s.epoch, worker)

    def heartbeat(self, worker: str, now: float | None = None) -> int:
        """Renew every lease of ``worker``; returns how many it holds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            n = 0
            for s in self._doing.values():
                if s.worker == worker:
                    s.deadline = now + self.config.lease_timeout_s
                    n += 1
            return n

    def fail_worker(self, worker: str) -> list[int]:
        """Declare ``worker`` dead: its shards go back to the queue at their committed offsets."""
        with self._lock:
            mine = [s for s in self._doing.values() if s.worker == worker]
            for s in sorted(mine, key=lambda s: -s.seq):
                self._requeue(s)
            return [s.sid for s in mine]

    def commit(
        self,
        shard_id: int,
        lease_id: int,
        generation: int,
        from_off: int,
        to_off: int,
        now: float | None = None,
    ) -> CommitResult:
        """Fenced, idempotent commit of samples ``[from_off, to_off)`` of a leased shard."""
        now = time.monotonic() if now is None else now
        with self._lock:
            s = self._shard(shard_id)
            for name, v in (("from_off", from_off), ("to_off", to_off), ("lease_id", lease_id)):
                if not isinstance(v, int) or isinstance(v, bool):
                    raise ValueError(f"{name} must be an int, got {v!r}")
            if not (s.start <= from_off < to_off <= s.end):
                raise ValueError(
                    f"commit range [{from_off}, {to_off}) is not a non-empty part of shard "
                    f"{shard_id} [{s.start}, {s.end})"
                )
            if generation != self._generation:
                raise StaleLeaseError(
                    f"lease {lease_id} is from service generation {generation}, now "
                    f"{self._generation} (the service was restored); its samples were re-queued"
                )
            if s.lease_id != lease_id or s.state not in (ShardState.DOING, ShardState.DONE):
                raise StaleLeaseError(
                    f"lease {lease_id} on shard {shard_id} is no longer current (expired or "
                    "re-leased); this worker's result must be discarded"
                )
            if to_off <= s.committed:
                return CommitResult(s.committed, s.state == ShardState.DONE, duplicate=True)
            if from_off != s.committed:
                raise OffsetMismatchError(
                    f"shard {shard_id}: commit from {from_off} but the committed offset is "
                    f"{s.committed}; commits must be contiguous"
                )
            s.committed = to_off
            s.planned = max(s.planned, to_off)
            s.progressed = True
            s.deadline = now + self.config.lease_timeout_s
            if self.record_commits:
                self.commit_log.append((from_off, to_off, s.worker))
            if s.committed == s.end:
                s.state = ShardState.DONE
                self._doing.pop(s.sid, None)
                self._done += 1
            return CommitResult(s.committed, s.state == ShardState.DONE)

    # ------------------------------------------------------------------ sync API
    def set_sizes(
        self, sizes: list[int] | tuple[int, ...], effective_step: int | None = None
    ) -> int:
        """Per-rank batch sizes from ``effective_step`` on (default: the first step not yet
        planned; an earlier step is moved to that one, so a change never splits a planned step).
        Returns the step it takes effect at."""
        sizes = tuple(int(b) for b in sizes)
        if not sizes or any(b < 0 for b in sizes) or sum(sizes) < 1:
            raise ValueError(f"batch sizes must be >= 0 with a positive sum, got {list(sizes)}")
        with self._lock:
            st = self._sync
            eff = st.next_step if effective_step is None else max(int(effective_step), st.next_step)
            if not st.sizes and eff == st.next_step:
                st.sizes = sizes
            else:
                st.schedule = [(e, z) for e, z in st.schedule if e < eff] + [(eff, sizes)]
            return eff

    def request_restart(self, rank: int, effective_step: int | None = None) -> int:
        """Ask ``rank`` to be restarted before ``effective_step`` (first unplanned step by default)."""
        with self._lock:
            st = self._sync
            eff = st.next_step if effective_step is None else max(int(effective_step), st.next_step)
            st.restart[eff] = int(rank)
            return eff

    @property
    def sizes(self) -> tuple[int, ...]:
        return self._sync.sizes

    @property
    def committed_step(self) -> int:
        return self._sync.committed_step

    def plan_step(self, step: int, world_size: int) -> StepPlan:
        """The plan of global step ``step`` (cached; computed when first asked, in order)."""
        with self._lock:
            self._check_failed()
            st = self._sync
            if step in st.plans:
                plan = st.plans[step]
                if len(plan.sizes) != world_size:
                    raise ValueError(
                        f"world size {world_size} but step {step} was planned for {len(plan.sizes)}"
                    )
                return plan
            if step <= st.committed_step:
                raise ShardError(
                    f"step {step} is already committed (last committed {st.committed_step})"
                )
            if step != st.next_step:
                raise ShardError(f"step {step} asked before step {st.next_step} was planned")
            if any(s.worker and not s.worker.startswith("@sync") for s in self._doing.values()):
                raise ShardError("plan_step() while async leases are outstanding")
            while st.schedule and st.schedule[0][0] <= step:
                st.sizes = st.schedule.pop(0)[1]
            if not st.sizes:
                raise ShardError("no batch sizes set: call set_sizes() before plan_step()")
            if len(st.sizes) != world_size:
                raise ValueError(
                    f"batch sizes {list(st.sizes)} are for {len(st.sizes)} ranks, not {world_size}"
                )
            # remaining samples in consumption order
            sizes = list(st.sizes)
            want = sum(sizes)
            remaining = self._remaining_unplanned()
            if remaining == 0:
                plan = StepPlan(
                    step,
                    self._generation,
                    tuple(0 for _ in sizes),
                    tuple(() for _ in sizes),
                    end_of_data=True,
                )
                st.plans[step] = plan
                st.next_step = step + 1
                return plan
            if remaining < want:
                weights = [max(b, 1e-9) for b in sizes]
                sizes = allocate(remaining, weights) if remaining >= 1 else [0] * len(sizes)
            ranges: list[list[tuple[int, int]]] = [[] for _ in sizes]
            used: list[tuple[int, int, int]] = []
            for r, b in enumerate(sizes):
                need = b
                while need > 0:
                    s = self._sync_head()
                    take = min(need, s.end - s.planned)
                    a = s.planned
                    s.planned += take
                    if ranges[r] and ranges[r][-1][1] == a:
                        ranges[r][-1] = (ranges[r][-1][0], a + take)
                    else:
                        ranges[r].append((a, a + take))
                    used.append((s.sid, a, a + take))
                    need -= take
            plan = StepPlan(
                step,
                self._generation,
                tuple(sizes),
                tuple(tuple(x) for x in ranges),
                restart_rank=st.restart.pop(step, -1),
            )
            st.plans[step] = plan
            st.plan_shards[step] = used
            st.next_step = step + 1
            return plan

    def _remaining_unplanned(self) -> int:
        n = sum(s.end - s.planned for s in self._doing.values())
        n += sum(self._shards[i].end - self._shards[i].planned for i in self._todo)
        return n

    def _sync_head(self) -> _Shard:
        """The shard the planner takes samples from next (a partially planned DOING one first)."""
        partial = [s for s in self._doing.values() if s.planned < s.end]
        if partial:
            return min(partial, key=lambda s: s.seq)
        s = self._shards[self._todo.popleft()]
        s.state = ShardState.DOING
        s.worker = "@sync"
        s.lease_id = -1
        s.planned = s.committed
        self._doing[s.sid] = s
        return s

    def commit_step(self, step: int, generation: int) -> CommitResult:
        """Mark every sample of the plan of ``step`` trained (after the optimizer step). Idempotent;
        steps commit in order; a plan from before a restore is refused."""
        with self._lock:
            st = self._sync
            if generation != self._generation:
                raise StaleLeaseError(
                    f"step {step} was planned in generation {generation}, now {self._generation}"
                )
            if step <= st.committed_step:
                return CommitResult(step, True, duplicate=True)
            if step != st.committed_step + 1:
                raise OffsetMismatchError(
                    f"commit_step({step}) but the last committed step is {st.committed_step}"
                )
            if step not in st.plans:
                raise ShardError(f"step {step} was never planned")
            for sid, a, b in st.plan_shards.pop(step, []):
                s = self._shards[sid]
                if s.committed != a:
                    raise OffsetMismatchError(
                        f"shard {sid}: plan starts at {a}, committed {s.committed}"
                    )
                s.committed = b
                if self.record_commits:
                    self.commit_log.append((a, b, f"@step{step}"))
                if s.committed == s.end:
                    s.state = ShardState.DONE
                    s.worker = ""
                    self._doing.pop(sid, None)
                    self._done += 1
            st.plans.pop(step)
            st.committed_step = step
            return CommitResult(step, False)

    # ------------------------------------------------------------------ status, snapshot
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "todo": len(self._todo),
                "doing": len(self._doing),
                "done": self._done,
                "failed": len(self._failed),
                "committed_samples": sum(s.committed - s.start for s in self._shards),
                "total_samples": sum(s.end - s.start for s in self._shards),
            }

    def finished(self) -> bool:
        with self._lock:
            return self._done == len(self._shards)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state as of the last commit (uncommitted plans and leases are left out: their
        samples are not trained as far as a checkpoint taken now is concerned)."""
        with self._lock:
            st = self._sync
            return {
                "version": SNAPSHOT_VERSION,
                "config": self.config.to_dict(),
                "generation": self._generation,
                "next_lease": self._next_lease,
                "shards": [[s.sid, s.committed, int(s.state), s.retries] for s in self._shards],
                "sizes": list(st.sizes),
                "schedule": [[e, list(z)] for e, z in st.schedule],
                "restart": [[k, v] for k, v in st.restart.items()],
                "committed_step": st.committed_step,
            }

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace the state by ``snap`` (from :meth:`snapshot`). Every outstanding lease and plan
        is fenced off (the generation moves past both the current and the snapshot's)."""
        shards = _validate_snapshot(snap, self.config)
        with self._lock:
            gen = max(self._generation, int(snap["generation"])) + 1
            self._generation = gen
            self._next_lease = max(self._next_lease, int(snap["next_lease"]))
            self._todo.clear()
            self._doing.clear()
            self._failed = []
            self._done = 0
            for sid, committed, state, retries in shards:
                s = self._shards[sid]
                s.committed = committed
                s.planned = committed
                s.retries = retries
                s.lease_id, s.worker, s.progressed = -1, "", False
                if state == ShardState.DONE or committed == s.end:
                    s.state = ShardState.DONE
                    self._done += 1
                elif state == ShardState.FAILED:
                    s.state = ShardState.FAILED
                    self._failed.append(sid)
                else:
                    s.state = ShardState.TODO
            for s in sorted(self._shards, key=lambda s: s.seq):
                if s.state == ShardState.TODO:
                    self._todo.append(s.sid)
            st = _SyncState()
            st.sizes = tuple(snap["sizes"])
            st.schedule = [(int(e), tuple(z)) for e, z in snap["schedule"]]
            st.restart = {int(k): int(v) for k, v in snap["restart"]}
            st.committed_step = int(snap["committed_step"])
            st.next_step = st.committed_step + 1
            self._sync = st


def _int(x: Any, what: str, lo: int | None = None, hi: int | None = None) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise ValueError(f"snapshot: {what} must be an int, got {x!r}")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise ValueError(f"snapshot: {what}={x} outside [{lo}, {hi}]")
    return x


def _validate_snapshot(snap: Any, config: ShardConfig) -> list[tuple[int, int, int, int]]:
    if not isinstance(snap, dict):
        raise ValueError(f"snapshot must be a dict, got {type(snap).__name__}")
    need = {
        "version",
        "config",
        "generation",
        "next_lease",
        "shards",
        "sizes",
        "schedule",
        "restart",
        "committed_step",
    }
    missing = need - set(snap)
    if missing:
        raise ValueError(f"snapshot lacks {sorted(missing)}")
    if snap["version"] != SNAPSHOT_VERSION:
        raise ValueError(
            f"snapshot version {snap['version']!r}, this service reads {SNAPSHOT_VERSION}"
        )
    if snap["config"] != config.to_dict():
        raise ValueError(
            f"snapshot was taken with config {snap['config']}, this service has {config.to_dict()}"
        )
    _int(snap["generation"], "generation", 0)
    _int(snap["next_lease"], "next_lease", 0)
    _int(snap["committed_step"], "committed_step", -1)
    n_per_epoch = -(-config.dataset_size // config.shard_size)
    total = n_per_epoch * config.num_epochs
    rows = snap["shards"]
    if not isinstance(rows, list) or len(rows) != total:
        raise ValueError(
            f"snapshot has {len(rows) if isinstance(rows, list) else rows!r} shards, expected {total}"
        )
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 4:
            raise ValueError(f"snapshot shard row {i} malformed: {row!r}")
        sid = _int(row[0], f"shard[{i}].id", i, i)
        j = sid % n_per_epoch
        a = j * config.shard_size
        b = min(config.dataset_size, a + config.shard_size)
        committed = _int(row[1], f"shard[{i}].committed", a, b)
        state = _int(row[2], f"shard[{i}].state", 0, 3)
        retries = _int(row[3], f"shard[{i}].retries", 0)
        out.append((sid, committed, state, retries))
    for key in ("sizes",):
        if not isinstance(snap[key], list) or any(
            not isinstance(b, int) or b < 0 for b in snap[key]
        ):
            raise ValueError(f"snapshot: {key} must be a list of ints >= 0")
    if not isinstance(snap["schedule"], list) or not isinstance(snap["restart"], list):
        raise ValueError("snapshot: schedule and restart must be lists")
    for e in snap["schedule"]:
        if not (isinstance(e, list) and len(e) == 2 and isinstance(e[1], list)):
            raise ValueError(f"snapshot: malformed schedule entry {e!r}")
        _int(e[0], "schedule step", 0)
    for e in snap["restart"]:
        if not (isinstance(e, list) and len(e) == 2):
            raise ValueError(f"snapshot: malformed restart entry {e!r}")
        _int(e[0], "restart step", 0)
        _int(e[1], "restart rank", 0)
    return out
