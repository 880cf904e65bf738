"""Monitor (AntDT Sec. "Monitor"): per-worker compute-only batch time, throughput, heartbeats and
node state, aggregated over windows for the controller.

Workers report, per step, the number of samples and the **compute-only** seconds (forward and
backward up to the moment the last gradient bucket is ready, without the time spent waiting for
peers in the allreduce: including it makes every rank look as slow as the straggler). The monitor
keeps a bounded history per rank, an exponential moving average of the per-sample time, the last
heartbeat, and a node state (``ALIVE``, ``STRAGGLER``, ``DEAD``) that the controller sets.
"""

from __future__ import annotations

import enum
import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Monitor", "MonitorConfig", "NodeState", "StepStat"]


class NodeState(enum.Enum):
    ALIVE = "alive"
    STRAGGLER = "straggler"
    DEAD = "dead"


@dataclass(frozen=True)
class MonitorConfig:
    """``ema``: weight of the newest per-sample time; ``history``: steps kept per rank;
    ``dead_after_s``: a rank without reports for this long is DEAD."""

    ema: float = 0.5
    history: int = 256
    dead_after_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.ema <= 1:
            raise ValueError(f"MonitorConfig.ema must be in (0, 1], got {self.ema}")
        if self.history < 1:
            raise ValueError(f"MonitorConfig.history must be >= 1, got {self.history}")
        if not self.dead_after_s > 0:
            raise ValueError(f"MonitorConfig.dead_after_s must be > 0, got {self.dead_after_s}")


@dataclass(frozen=True)
class StepStat:
    rank: int
    step: int
    samples: int
    compute_s: float
    step_s: float
    restart_count: int = 0
    node: str = ""
    t: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 0 or self.step < 0 or self.samples < 0:
            raise ValueError(f"rank, step and samples must be >= 0, got {self}")
        for name in ("compute_s", "step_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v}")


@dataclass
class _Rank:
    history: deque = field(default_factory=deque)
    ema_per_sample: float | None = None
    last_seen: float = 0.0
    state: NodeState = NodeState.ALIVE
    restart_count: int = 0
    node: str = ""


class Monitor:
    """Thread-safe store of worker step statistics."""

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self._lock = threading.Lock()
        self._ranks: dict[int, _Rank] = {}
        self.timeline: list[StepStat] = []  # every report, for the timeline plot

    def report(self, stat: StepStat) -> None:
        now = stat.t or time.monotonic()
        with self._lock:
            r = self._ranks.setdefault(stat.rank, _Rank(history=deque(maxlen=self.config.history)))
            if stat.restart_count != r.restart_count:
                # a restarted worker (possibly on a healthier host): forget the old speed
                r.history.clear()
                r.ema_per_sample = None
                r.restart_count = stat.restart_count
            r.history.append(stat)
            r.last_seen = now
            r.node = stat.node
            if r.state == NodeState.DEAD:
                r.state = NodeState.ALIVE
            if stat.samples > 0:
                x = stat.compute_s / stat.samples
                a = self.config.ema
                r.ema_per_sample = (
                    x if r.ema_per_sample is None else a * x + (1 - a) * r.ema_per_sample
                )
            self.timeline.append(StepStat(**{**stat.__dict__, "t": now}))

    def heartbeat(self, rank: int, now: float | None = None) -> None:
        with self._lock:
            r = self._ranks.setdefault(rank, _Rank(history=deque(maxlen=self.config.history)))
            r.last_seen = time.monotonic() if now is None else now

    def ranks(self) -> list[int]:
        with self._lock:
            return sorted(self._ranks)

    def speed(self, rank: int) -> float | None:
        """EMA throughput of ``rank`` in samples per compute-second (None before any report)."""
        with self._lock:
            r = self._ranks.get(rank)
            if r is None or not r.ema_per_sample:
                return None
            return 1.0 / r.ema_per_sample

    def speeds(self, world: int) -> list[float] | None:
        out = [self.speed(r) for r in range(world)]
        return None if any(s is None for s in out) else out  # type: ignore[return-value]

    def window_speed(self, rank: int, last: int) -> float | None:
        """Median per-step throughput of the last ``last`` steps (robust to one spike)."""
        with self._lock:
            r = self._ranks.get(rank)
            if r is None:
                return None
            xs = [
                s.samples / s.compute_s
                for s in list(r.history)[-last:]
                if s.samples and s.compute_s > 0
            ]
        return statistics.median(xs) if xs else None

    def steps_seen(self, rank: int) -> int:
        with self._lock:
            r = self._ranks.get(rank)
            return len(r.history) if r else 0

    def set_state(self, rank: int, state: NodeState) -> None:
        with self._lock:
            self._ranks.setdefault(
                rank, _Rank(history=deque(maxlen=self.config.history))
            ).state = state

    def refresh(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for r in self._ranks.values():
                if now - r.last_seen > self.config.dead_after_s:
                    r.state = NodeState.DEAD

    def summary(self) -> dict[str, dict]:
        with self._lock:
            return {
                str(k): {
                    "state": r.state.value,
                    "speed": (1.0 / r.ema_per_sample) if r.ema_per_sample else None,
                    "steps": len(r.history),
                    "restart_count": r.restart_count,
                    "node": r.node,
                    "last_batch_s": r.history[-1].compute_s if r.history else None,
                }
                for k, r in self._ranks.items()
            }
