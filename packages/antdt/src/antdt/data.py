"""Data loaders that pull from the shard service.

* :class:`ShardLoader` (async, AntDT-ND's dynamic sharding): a worker leases shards, yields
  mini-batches of global sample indices, and commits each batch after it was applied
  (``batch.commit()``). Fast workers come back sooner and take more shards. ``WAIT`` is honoured
  (a shard leased by a worker that dies comes back and must be drained), the loop ends only on
  ``END``. A commit refused as stale (this worker was presumed dead) raises
  :class:`~antdt.sharding.StaleLeaseError`: the caller must discard that batch's effect.
* :class:`StepLoader` (sync): the indices of this rank for each step plan (what the
  :class:`~antdt.trainer.Trainer` uses).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from .agent import Heartbeat
from .client import MasterClient
from .sharding import END, WAIT, CommitResult, Lease, StepPlan

__all__ = ["ShardBatch", "ShardLoader", "StepLoader"]


@dataclass
class ShardBatch:
    indices: list[int]
    lease: Lease
    from_off: int
    to_off: int
    _client: MasterClient

    def commit(self) -> CommitResult:
        return self._client.commit(self.lease, self.from_off, self.to_off)


class ShardLoader:
    """Iterate mini-batches of indices leased from the master by ``worker``."""

    def __init__(
        self,
        client: MasterClient,
        worker: str,
        batch_size: int,
        *,
        poll_s: float = 0.05,
        heartbeat_s: float | None = 1.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.client, self.worker, self.batch_size = client, worker, batch_size
        self.poll_s, self.heartbeat_s = poll_s, heartbeat_s

    def __iter__(self) -> Iterator[ShardBatch]:
        hb = Heartbeat(self.client, self.worker, self.heartbeat_s) if self.heartbeat_s else None
        if hb:
            hb.__enter__()
        try:
            while True:
                lease = self.client.acquire(self.worker)
                if lease is END:
                    return
                if lease is WAIT:
                    time.sleep(self.poll_s)
                    continue
                assert isinstance(lease, Lease)
                a = lease.start
                while a < lease.end:
                    b = min(lease.end, a + self.batch_size)
                    yield ShardBatch(list(range(a, b)), lease, a, b, self.client)
                    a = b
        finally:
            if hb:
                hb.__exit__(None, None, None)


class StepLoader:
    """This rank's indices for steps ``start, start + 1, ...`` until the data runs out."""

    def __init__(self, client: MasterClient, rank: int, world: int, start: int = 0) -> None:
        self.client, self.rank, self.world, self.step = client, rank, world, start

    def __iter__(self) -> Iterator[tuple[StepPlan, list[int]]]:
        while True:
            plan = self.client.plan_step(self.step, self.rank, self.world)
            if plan.end_of_data:
                return
            yield plan, plan.indices(self.rank)
            self.step += 1
