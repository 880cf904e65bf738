"""The master: the shard service, monitor and controller behind one gRPC endpoint (its own process).

It lives outside the torchrun worker group, so it survives worker restarts (torchrun restarts every
local worker on any failure; state that must survive cannot live in a worker). Security: it binds
127.0.0.1 by default; binding anything else requires a shared token, checked on every call
(``x-antdt-token`` metadata, constant-time compare). Requests are parsed from raw bytes in the
handler: a malformed message, unknown fields or out-of-range values get ``INVALID_ARGUMENT`` with a
message saying what is wrong, and change nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from .controller import AdjustBatchSize, Controller, ControllerConfig, KillRestart
from .monitor import Monitor, MonitorConfig, StepStat
from .protocol import MESSAGES, METHODS, SERVICE, msg
from .sharding import (
    END,
    WAIT,
    OffsetMismatchError,
    RetryLimitExceeded,
    ShardConfig,
    ShardError,
    ShardService,
    StaleLeaseError,
)

__all__ = ["TOKEN_HEADER", "Master", "MasterConfig"]

TOKEN_HEADER = "x-antdt-token"
_MAX_MESSAGE = 4 << 20
_log = logging.getLogger("antdt.master")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MasterConfig:
    """``controller=None``: a pure shard service (async leases only)."""

    shard: ShardConfig
    controller: ControllerConfig | None = None
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    expire_interval_s: float = 0.1
    record_commits: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"MasterConfig.port must be in [0, 65535], got {self.port}")
        if not _is_loopback(self.host) and not self.token:
            raise ValueError(
                f"binding the master to {self.host!r} exposes it beyond this machine: pass a "
                "token (MasterConfig.token / --token-env) that every client must present"
            )
        if self.token is not None and len(self.token) < 8:
            raise ValueError("the master token must be at least 8 characters")
        if not self.expire_interval_s > 0:
            raise ValueError("expire_interval_s must be > 0")


class _BadRequest(ValueError):
    pass


def _has_unknown_fields(m: Any) -> bool:
    try:
        from google.protobuf.unknown_fields import UnknownFieldSet

        return len(UnknownFieldSet(m)) > 0
    except ImportError:  # pragma: no cover - protobuf < 4.22
        return len(m.UnknownFields()) > 0


class Master:
    """Shard service + monitor + controller, served over gRPC. ``start()`` returns the port."""

    def __init__(self, config: MasterConfig) -> None:
        self.config = config
        self.service = ShardService(config.shard, record_commits=config.record_commits)
        self.monitor = Monitor(config.monitor)
        self.controller = Controller(config.controller) if config.controller else None
        if self.controller is not None:
            self.service.set_sizes(self.controller.sizes, 0)
        self.actions: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reported: dict[int, set[int]] = {}
        self._restart_count = 0
        self._server: grpc.Server | None = None
        self._stop = threading.Event()
        self._expirer: threading.Thread | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> int:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
            ],
        )
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(name, req, getattr(self, f"_h_{name}")),
                request_deserializer=None,
                response_serializer=lambda m: m.SerializeToString(),
            )
            for name, (req, _rep) in METHODS.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        host = self.config.host
        bind = f"[{host}]" if ":" in host else host
        port = server.add_insecure_port(f"{bind}:{self.config.port}")
        if port == 0:
            raise OSError(f"cannot bind the master to {host}:{self.config.port}")
        server.start()
        self._server, self.port = server, port
        self._expirer = threading.Thread(target=self._expire_loop, daemon=True, name="antdt-expire")
        self._expirer.start()
        _log.info("antdt master on %s:%d", host, port)
        return port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def _expire_loop(self) -> None:
        while not self._stop.wait(self.config.expire_interval_s):
            gone = self.service.expire()
            if gone:
                _log.info("lease expired for shards %s: re-queued at their committed offsets", gone)
            self.monitor.refresh()

    def stop(self, grace: float | None = 0.5) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stop(grace).wait(5)
            self._server = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a Shutdown call (or :meth:`stop`)."""
        return self._stop.wait(timeout)

    def __enter__(self) -> Master:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ plumbing
    def _wrap(self, name: str, req_type: str, fn):
        cls = MESSAGES[req_type]
        token = self.config.token

        def handler(raw: bytes, context: grpc.ServicerContext):
            if token is not None:
                got = dict(context.invocation_metadata()).get(TOKEN_HEADER, "")
                if not hmac.compare_digest(str(got).encode(), token.encode()):
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong antdt token")
            try:
                req = cls.FromString(raw)
            except Exception as e:  # DecodeError and friends
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"_BadRequest: {name}: malformed {req_type} message ({e})",
                )
            if _has_unknown_fields(req):
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"_BadRequest: {name}: {req_type} carries fields outside the schema",
                )
            try:
                return fn(req)
            except RetryLimitExceeded as e:
                context.abort(grpc.StatusCode.ABORTED, f"RetryLimitExceeded: {e}")
            except StaleLeaseError as e:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"StaleLeaseError: {e}")
            except OffsetMismatchError as e:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"OffsetMismatchError: {e}")
            except ShardError as e:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"ShardError: {e}")
            except (ValueError, TypeError, KeyError) as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"_BadRequest: {name}: {e}")

        return handler

    @staticmethod
    def _worker(req: Any) -> str:
        w = req.worker
        if not w or len(w) > 256 or not w.isprintable():
            raise _BadRequest(f"worker id must be 1..256 printable characters, got {w!r}")
        return w

    # ------------------------------------------------------------------ async shard API
    def _h_Acquire(self, req):
        r = self.service.acquire(self._worker(req))
        if r is WAIT:
            return msg("AcquireReply", status=1)
        if r is END:
            return msg("AcquireReply", status=2)
        return msg(
            "AcquireReply",
            status=0,
            shard_id=r.shard_id,
            lease_id=r.lease_id,
            generation=r.generation,
            start=r.start,
            end=r.end,
            epoch=r.epoch,
        )

    def _h_Commit(self, req):
        self._worker(req)
        res = self.service.commit(
            int(req.shard_id),
            int(req.lease_id),
            int(req.generation),
            int(req.from_off),
            int(req.to_off),
        )
        return msg("CommitReply", committed=res.committed, done=res.done, duplicate=res.duplicate)

    def _h_Heartbeat(self, req):
        return msg("HeartbeatReply", leases=self.service.heartbeat(self._worker(req)))

    def _h_FailWorker(self, req):
        sids = self.service.fail_worker(self._worker(req))
        return msg("Ack", ok=True, info=json.dumps(sids))

    # ------------------------------------------------------------------ sync step API
    def _h_PlanStep(self, req):
        world = int(req.world)
        rank = int(req.rank)
        if world < 1 or not 0 <= rank < world or req.step < 0:
            raise _BadRequest(
                f"need step >= 0 and 0 <= rank < world, got step={req.step} rank={rank} world={world}"
            )
        plan = self.service.plan_step(int(req.step), world)
        return msg(
            "PlanReply",
            step=plan.step,
            generation=plan.generation,
            sizes=list(plan.sizes),
            starts=[a for a, _ in plan.ranges[rank]],
            ends=[b for _, b in plan.ranges[rank]],
            end_of_data=plan.end_of_data,
            restart_rank=plan.restart_rank,
        )

    def _h_CommitStep(self, req):
        if req.step < 0:
            raise _BadRequest(f"step must be >= 0, got {req.step}")
        res = self.service.commit_step(int(req.step), int(req.generation))
        return msg("CommitReply", committed=res.committed, done=res.done, duplicate=res.duplicate)

    def _h_Snapshot(self, req):
        return msg("JsonBlob", json=json.dumps(self.service.snapshot()))

    def _h_Restore(self, req):
        try:
            snap = json.loads(req.json)
        except json.JSONDecodeError as e:
            raise _BadRequest(f"snapshot is not JSON: {e}") from None
        self.service.restore(snap)
        with self._lock:
            self._reported.clear()
            if self.controller is not None and self.service.sizes:
                self.controller.sizes = self.service.sizes
                self.controller.on_restart()
        self.actions.append(
            {"t": time.time(), "kind": "restore", "step": self.service.committed_step}
        )
        return msg("Ack", ok=True, info=f"generation {self.service.generation}")

    # ------------------------------------------------------------------ monitor / controller
    def _h_ReportStats(self, req):
        stat = StepStat(
            rank=int(req.rank),
            step=int(req.step),
            samples=int(req.samples),
            compute_s=float(req.compute_s),
            step_s=float(req.step_s),
            restart_count=int(req.restart_count),
            node=req.node[:64],
            t=time.monotonic(),
        )
        self.monitor.report(stat)
        ctl = self.controller
        if ctl is None:
            return msg("Ack", ok=True)
        if stat.rank >= ctl.config.world_size:
            raise _BadRequest(f"rank {stat.rank} >= world size {ctl.config.world_size}")
        with self._lock:
            if stat.restart_count > self._restart_count:
                self._restart_count = stat.restart_count
                self._reported.clear()
                ctl.on_restart()
            seen = self._reported.setdefault(stat.step, set())
            seen.add(stat.rank)
            if len(seen) < ctl.config.world_size:
                return msg("Ack", ok=True)
            del self._reported[stat.step]
            counts = self.service.counts()
            remaining = counts["total_samples"] - counts["committed_samples"]
            for a in ctl.on_step(stat.step, self.monitor, remaining):
                if isinstance(a, AdjustBatchSize):
                    eff = self.service.set_sizes(a.sizes)
                    rec = {"kind": "adjust_bs", "sizes": list(a.sizes), "reason": a.reason}
                elif isinstance(a, KillRestart):
                    eff = self.service.request_restart(a.rank)
                    rec = {
                        "kind": "kill_restart",
                        "rank": a.rank,
                        "t_save_s": a.t_save_s,
                        "cost_s": a.cost_s,
                    }
                else:  # pragma: no cover
                    continue
                rec.update({"decided_at_step": stat.step, "effective_step": eff, "t": time.time()})
                self.actions.append(rec)
                _log.info("controller action %s", rec)
        return msg("Ack", ok=True)

    def status(self, timeline: bool = False) -> dict[str, Any]:
        """Counts, sizes, monitor summary, actions, ND decisions; with ``timeline`` also the
        last 5000 step statistics (for :func:`antdt.timeline.plot_timeline`)."""
        ctl = self.controller
        extra = (
            {"timeline": [s.__dict__ for s in self.monitor.timeline[-5000:]]} if timeline else {}
        )
        return {
            **extra,
            "counts": self.service.counts(),
            "generation": self.service.generation,
            "committed_step": self.service.committed_step,
            "sizes": list(self.service.sizes),
            "monitor": self.monitor.summary(),
            "actions": list(self.actions),
            "decisions": [d.__dict__ for d in ctl.decisions] if ctl else [],
            "finished": self.service.finished(),
        }

    def _h_Status(self, req):
        return msg("JsonBlob", json=json.dumps(self.status(), default=str))

    def _h_Shutdown(self, req):
        self._stop.set()
        return msg("Ack", ok=True)
