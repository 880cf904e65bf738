"""Client of the master service (used by workers, the agent and tools)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import grpc

from .master import TOKEN_HEADER
from .monitor import StepStat
from .protocol import MESSAGES, METHODS, SERVICE, msg
from .sharding import (
    END,
    WAIT,
    CommitResult,
    Lease,
    OffsetMismatchError,
    RetryLimitExceeded,
    ShardError,
    StaleLeaseError,
    StepPlan,
)

__all__ = ["ENV_ADDR", "ENV_TOKEN", "MasterClient", "MasterUnavailable", "RequestRejected"]

ENV_ADDR = "ANTDT_MASTER_ADDR"
ENV_TOKEN = "ANTDT_TOKEN"


class MasterUnavailable(ConnectionError):
    """The master could not be reached within the client's deadline."""


class RequestRejected(ValueError):
    """The master refused a request as malformed or unauthenticated."""


_ERRORS = {
    "RetryLimitExceeded": RetryLimitExceeded,
    "StaleLeaseError": StaleLeaseError,
    "OffsetMismatchError": OffsetMismatchError,
    "ShardError": ShardError,
    "_BadRequest": RequestRejected,
}


class MasterClient:
    """Typed calls to a :class:`~antdt.master.Master`. ``address`` defaults to
    ``$ANTDT_MASTER_ADDR``, ``token`` to ``$ANTDT_TOKEN``. Calls wait up to ``timeout_s`` for the
    master (so a master that is restarting is waited for, not failed on)."""

    def __init__(
        self, address: str | None = None, *, token: str | None = None, timeout_s: float = 30.0
    ) -> None:
        address = address or os.environ.get(ENV_ADDR)
        if not address:
            raise ValueError(f"no master address: pass one or set ${ENV_ADDR}")
        self.address = address
        self.token = token if token is not None else os.environ.get(ENV_TOKEN)
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(address)
        self._stubs = {
            name: self._channel.unary_unary(
                f"/{SERVICE}/{name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=MESSAGES[rep].FromString,
            )
            for name, (_req, rep) in METHODS.items()
        }

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MasterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, name: str, request: Any) -> Any:
        md = ((TOKEN_HEADER, self.token),) if self.token else None
        try:
            return self._stubs[name](
                request, timeout=self.timeout_s, metadata=md, wait_for_ready=True
            )
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
            kind, _, text = details.partition(": ")
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise PermissionError(
                    f"master {self.address} refused the token: {details}"
                ) from None
            if kind in _ERRORS:
                raise _ERRORS[kind](text) from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise MasterUnavailable(f"master {self.address}: {code.name}: {details}") from None
            raise

    # ------------------------------------------------------------------ async shards
    def acquire(self, worker: str) -> Lease | Any:
        r = self.call("Acquire", msg("WorkerRequest", worker=worker))
        if r.status == 1:
            return WAIT
        if r.status == 2:
            return END
        return Lease(r.shard_id, r.lease_id, r.generation, r.start, r.end, r.epoch, worker)

    def commit(self, lease: Lease, from_off: int, to_off: int) -> CommitResult:
        r = self.call(
            "Commit",
            msg(
                "CommitRequest",
                worker=lease.worker,
                shard_id=lease.shard_id,
                lease_id=lease.lease_id,
                generation=lease.generation,
                from_off=from_off,
                to_off=to_off,
            ),
        )
        return CommitResult(r.committed, r.done, r.duplicate)

    def heartbeat(self, worker: str) -> int:
        return self.call("Heartbeat", msg("WorkerRequest", worker=worker)).leases

    def fail_worker(self, worker: str) -> list[int]:
        return json.loads(self.call("FailWorker", msg("WorkerRequest", worker=worker)).info)

    # ------------------------------------------------------------------ sync steps
    def plan_step(self, step: int, rank: int, world: int) -> StepPlan:
        r = self.call("PlanStep", msg("PlanRequest", step=step, rank=rank, world=world))
        mine = tuple(zip(r.starts, r.ends, strict=True))
        ranges = tuple(mine if i == rank else () for i in range(world))
        return StepPlan(r.step, r.generation, tuple(r.sizes), ranges, r.end_of_data, r.restart_rank)

    def commit_step(self, step: int, generation: int) -> CommitResult:
        r = self.call("CommitStep", msg("CommitStepRequest", step=step, generation=generation))
        return CommitResult(r.committed, r.done, r.duplicate)

    def snapshot(self) -> dict[str, Any]:
        return json.loads(self.call("Snapshot", msg("Empty")).json)

    def restore(self, snap: dict[str, Any]) -> str:
        return self.call("Restore", msg("JsonBlob", json=json.dumps(snap))).info

    def report(self, stat: StepStat) -> None:
        self.call(
            "ReportStats",
            msg(
                "StatsRequest",
                rank=stat.rank,
                step=stat.step,
                samples=stat.samples,
                compute_s=stat.compute_s,
                step_s=stat.step_s,
                restart_count=stat.restart_count,
                node=stat.node,
            ),
        )

    def status(self) -> dict[str, Any]:
        return json.loads(self.call("Status", msg("Empty")).json)

    def shutdown(self) -> None:
        self.call("Shutdown", msg("Empty"))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise MasterUnavailable(
                f"master {self.address} not reachable in {timeout_s}s"
            ) from None


def wait_for_port_file(path: str, timeout_s: float = 30.0) -> str:
    """The ``host:port`` a master wrote to ``path`` (``python -m antdt master --port-file``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                return text
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise MasterUnavailable(f"no master address in {path} after {timeout_s}s")
