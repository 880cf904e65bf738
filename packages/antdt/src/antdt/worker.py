"""A torch-free async worker: ``python -m antdt.worker --worker-id W [--address A]``.

It leases shards, "trains" each mini-batch (sleeps ``--batch-seconds``; a real worker would push a
gradient), and commits it; the accepted commit is the point where the batch takes effect
(parameter-server style: the server applies a gradient only with a fenced commit). A commit
refused as stale (this worker was presumed dead, or the master was restored) discards the batch
and the worker leases again. Used by the fault tests, the bench and the demo; also a template for
async workers.
"""

from __future__ import annotations

import argparse
import sys
import time

from .client import MasterClient, MasterUnavailable
from .data import ShardLoader
from .sharding import StaleLeaseError

__all__ = ["run_worker"]


def run_worker(
    client: MasterClient,
    worker: str,
    batch_size: int = 10,
    batch_seconds: float = 0.0,
    heartbeat_s: float = 0.2,
) -> dict[str, int]:
    applied = stale = 0
    while True:
        try:
            for batch in ShardLoader(client, worker, batch_size, heartbeat_s=heartbeat_s):
                if batch_seconds:
                    time.sleep(batch_seconds)
                try:
                    res = batch.commit()
                except StaleLeaseError:
                    stale += 1
                    break  # discard, lease again
                if not res.duplicate:
                    applied += len(batch.indices)
            else:
                return {"applied": applied, "stale": stale}
        except MasterUnavailable:
            time.sleep(0.2)  # the master is restarting; its snapshot fences our old leases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m antdt.worker", description=__doc__)
    p.add_argument("--address", default=None)
    p.add_argument("--worker-id", required=True)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--batch-seconds", type=float, default=0.0)
    p.add_argument("--heartbeat", type=float, default=0.2)
    a = p.parse_args(argv)
    with MasterClient(a.address, timeout_s=60) as c:
        out = run_worker(c, a.worker_id, a.batch_size, a.batch_seconds, a.heartbeat)
    print(f"{a.worker_id}: applied {out['applied']} samples, {out['stale']} stale batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
