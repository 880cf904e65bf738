"""Baselines AntDT is measured against.

* Plain DDP with equal batches: the :class:`~antdt.trainer.Trainer` with the controller off
  (``ControllerConfig(mode="off")``): every rank gets ``B / W`` and waits for the slowest.
* :func:`backup_workers_run`: synchronous SGD with backup workers (Chen et al. 2016, "Revisiting
  Distributed Synchronous SGD"): ``W`` workers compute on equal batches, rank 0 aggregates the
  first ``W - backups`` gradients to arrive and drops the rest (their samples are never trained:
  the data loss AntDT's paper criticises), then broadcasts the parameters.
* :class:`AtLeastOnceShardService`: DLRover-style dynamic sharding (as read from DLRover's
  ``batch_dataset_manager``): no committed offsets, a failed shard goes back whole to the *end* of
  the queue (samples trained before the failure are trained again), and a shard that failed more
  than 3 times is dropped with a log line.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from .sharding import END, WAIT, ShardConfig

__all__ = ["AtLeastOnceShardService", "BackupResult", "backup_workers_run"]

_log = logging.getLogger("antdt.baselines")


class AtLeastOnceShardService:
    """DLRover-like task manager: ``get_task``/``report`` per whole shard; ``fail_worker``
    re-queues at the end; ``max_retries`` failures drop the shard."""

    def __init__(self, config: ShardConfig, max_retries: int = 3) -> None:
        n = -(-config.dataset_size // config.shard_size)
        self.shards = [
            (j * config.shard_size, min(config.dataset_size, (j + 1) * config.shard_size))
            for j in range(n)
        ]
        self.todo: deque[int] = deque(range(n))
        self.doing: dict[int, str] = {}
        self.retries = [0] * n
        self.dropped: list[int] = []
        self.max_retries = max_retries

    def acquire(self, worker: str):
        if self.todo:
            sid = self.todo.popleft()
            self.doing[sid] = worker
            return sid, self.shards[sid]
        return WAIT if self.doing else END

    def report_done(self, sid: int) -> None:
        self.doing.pop(sid, None)

    def fail_worker(self, worker: str) -> None:
        for sid, w in list(self.doing.items()):
            if w != worker:
                continue
            del self.doing[sid]
            self.retries[sid] += 1
            if self.retries[sid] > self.max_retries:
                self.dropped.append(sid)
                _log.error("shard %d dropped after %d retries", sid, self.retries[sid])
            else:
                self.todo.append(sid)


@dataclass
class BackupResult:
    steps: int
    seconds: float
    samples_used: int
    samples_dropped: int
    kept_ranks: list[list[int]]


def _sleep_until(deadline: float, done: threading.Event | None) -> bool:
    """Sleep until ``deadline`` unless ``done`` is set first; True when it was (abandoned)."""
    left = deadline - time.perf_counter()
    if done is None:
        if left > 0:
            time.sleep(left)
        return False
    return done.wait(max(left, 0.0))


def _waiter(req, on_done) -> threading.Thread:
    """gloo's point-to-point work objects do not report completion by polling; wait in a thread."""

    def run() -> None:
        req.wait()
        on_done()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def backup_workers_run(
    model,
    data,
    loss_fn,
    *,
    global_batch: int,
    steps: int,
    backups: int = 1,
    lr: float = 0.05,
    speeds: tuple[float, ...] | None = None,
) -> BackupResult:
    """Run ``steps`` synchronous SGD steps with ``backups`` backup workers in this rank (default
    process group initialised). Rank 0 is worker and aggregator: it takes the first
    ``W - backups`` gradients (its own counts when it is done), tells every other rank the step is
    over (a rank still computing abandons its batch, whose samples are dropped), applies the mean
    and broadcasts the parameters. ``speeds``: emulated device speeds (samples/s) as in
    :class:`~antdt.inject.EmulatedSpeed`. Rank 0 should not be the straggler (it must aggregate)."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    if not 0 <= backups < world:
        raise ValueError(f"backups must be in [0, {world}), got {backups}")
    b = global_batch // world
    keep = world - backups
    params = list(model.parameters())
    flat_n = sum(p.numel() for p in params)
    dtype = params[0].dtype
    used = dropped = 0
    kept_log: list[list[int]] = []

    def grad_of(step: int) -> torch.Tensor:
        base = step * global_batch + rank * b
        x, y = data(list(range(base, base + b)))
        model.zero_grad(set_to_none=False)
        (loss_fn(model(x), y) / b).backward()
        return torch.cat([p.grad.reshape(-1) for p in params])

    dist.barrier()
    t0 = time.perf_counter()
    for step in range(steps):
        t_start = time.perf_counter()
        compute = b / speeds[rank % len(speeds)] if speeds else 0.0
        if rank == 0:
            bufs = {r: torch.empty(flat_n + 1, dtype=dtype) for r in range(1, world)}
            arrivals: queue.Queue[int] = queue.Queue()
            waiters = [
                _waiter(dist.irecv(bufs[r], src=r), lambda r=r, a=arrivals: a.put(r))
                for r in range(1, world)
            ]
            _sleep_until(t_start + compute, None)
            grads = {0: grad_of(step)}
            seen = 0
            while len(grads) < keep and seen < world - 1:
                r = arrivals.get()
                seen += 1
                if bufs[r][0] == 1:
                    grads[r] = bufs[r][1:]
            for r in range(1, world):
                dist.send(torch.ones(1, dtype=dtype), dst=r)
            for t in waiters:
                t.join()
            chosen = sorted(grads)
            agg = sum(grads[r] for r in chosen) / len(chosen)
            kept_log.append(chosen)
            off = 0
            with torch.no_grad():
                for p in params:
                    n = p.numel()
                    p -= lr * agg[off : off + n].view_as(p)
                    off += n
            used += len(chosen) * b
            dropped += (world - len(chosen)) * b
        else:
            flag = torch.zeros(1, dtype=dtype)
            over = threading.Event()
            fw = _waiter(dist.irecv(flag, src=0), over.set)
            abandoned = _sleep_until(t_start + compute, over)
            if abandoned:
                dist.send(torch.zeros(flat_n + 1, dtype=dtype), dst=0)
            else:
                g = grad_of(step)
                dist.send(torch.cat([torch.ones(1, dtype=dtype), g]), dst=0)
            fw.join()
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        dist.broadcast(flat, src=0)
        off = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                p.copy_(flat[off : off + n].view_as(p))
                off += n
    return BackupResult(steps, time.perf_counter() - t0, used, dropped, kept_log)
