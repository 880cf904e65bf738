"""Straggler and fault injection: emulated device speed, sleep-based slowdown, CPU hog, kill at
step k.

* :class:`EmulatedSpeed`: rank ``r`` "computes" ``b`` samples in ``b / speed[r]`` seconds (a sleep
  before the real forward/backward). Load-independent, so throughput *ratios* between policies
  are deterministic on a shared box: this is how the claims emulate heterogeneous devices.
  ``until_restart=True``: the slowdown holds only in the first torchrun attempt (the straggler was
  "relaunched on a healthy host" by a KILL_RESTART).
* :class:`SleepSlowdown`: sleep ``(factor - 1) * t`` after a step whose real compute took ``t``
  (a real-compute straggler), for steps ``[start_step, end_step)``.
* :class:`CpuHog`: a busy-loop process pinned (``sched_setaffinity``) to a core: real contention,
  like a co-located job in a non-dedicated cluster.
* :class:`KillAt`: SIGKILL this process at the end of step ``step`` of attempt ``attempt``
  (``TORCHELASTIC_RESTART_COUNT``), the fault the exactly-once tests inject.

:func:`from_spec` builds injectors from a JSON-able list (for torchrun jobs and the CLI).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CpuHog",
    "EmulatedSpeed",
    "Injector",
    "KillAt",
    "SleepSlowdown",
    "from_spec",
    "restart_count",
    "set_attempt",
]


_ATTEMPT: int | None = None


def set_attempt(attempt: int | None) -> None:
    """Set the job-wide attempt number (the trainer sets it to the master's generation, which
    every restore increments). torchrun's ``TORCHELASTIC_RESTART_COUNT`` is per node agent: after
    a failure on another node this node's workers are restarted with their count unchanged."""
    global _ATTEMPT
    _ATTEMPT = attempt


def restart_count() -> int:
    """The job-wide attempt number if the trainer set it, else this node's torchrun restart count."""
    if _ATTEMPT is not None:
        return _ATTEMPT
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


class Injector:
    """Hooks the trainer calls: ``before_compute`` (inside the timed compute), ``after_compute``
    (also timed) and ``after_step`` (after the optimizer step and the commit)."""

    def before_compute(self, rank: int, step: int, samples: int) -> None:
        pass

    def after_compute(self, rank: int, step: int, compute_s: float) -> None:
        pass

    def after_step(self, rank: int, step: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class EmulatedSpeed(Injector):
    speeds: tuple[float, ...]
    until_restart: bool = False
    start_step: int = 0

    def __post_init__(self) -> None:
        self.speeds = tuple(float(s) for s in self.speeds)
        if not self.speeds or any(not s > 0 for s in self.speeds):
            raise ValueError(f"EmulatedSpeed.speeds must be > 0, got {self.speeds}")

    def speed(self, rank: int, step: int) -> float:
        s = self.speeds[rank % len(self.speeds)]
        if step < self.start_step or (self.until_restart and restart_count() > 0):
            return max(self.speeds)
        return s

    def before_compute(self, rank: int, step: int, samples: int) -> None:
        if samples > 0:
            time.sleep(samples / self.speed(rank, step))


@dataclass
class SleepSlowdown(Injector):
    """Rank ``rank`` runs ``factor`` times slower than its real compute: before each step it
    sleeps ``(factor - 1)`` times the real compute time of its previous step (inside the timed
    compute, so the monitor sees the slowdown as compute, as it would on a slow device)."""

    rank: int
    factor: float = 2.0
    start_step: int = 0
    end_step: int | None = None
    attempt: int | None = 0

    def __post_init__(self) -> None:
        if not self.factor >= 1:
            raise ValueError(f"SleepSlowdown.factor must be >= 1, got {self.factor}")
        self._real = 0.0
        self._slept = 0.0

    def _active(self, rank: int, step: int) -> bool:
        if rank != self.rank or step < self.start_step:
            return False
        if self.end_step is not None and step >= self.end_step:
            return False
        return self.attempt is None or restart_count() == self.attempt

    def before_compute(self, rank: int, step: int, samples: int) -> None:
        self._slept = 0.0
        if self._active(rank, step) and self._real > 0:
            self._slept = (self.factor - 1.0) * self._real
            time.sleep(self._slept)

    def after_compute(self, rank: int, step: int, compute_s: float) -> None:
        if rank == self.rank:
            self._real = max(compute_s - self._slept, 0.0)


def _spin(core: int | None) -> None:  # pragma: no cover - runs in the hog process
    if core is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {core})
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


class CpuHog(Injector):
    """A busy process on ``core`` while the context (or the injector) is open."""

    def __init__(self, core: int | None = None, rank: int | None = None) -> None:
        self.core, self.rank = core, rank
        self._proc: Any = None

    def start(self) -> CpuHog:
        if self._proc is None:
            self._proc = mp.get_context("spawn").Process(
                target=_spin, args=(self.core,), daemon=True
            )
            self._proc.start()
        return self

    def before_compute(self, rank: int, step: int, samples: int) -> None:
        if self.rank is None or rank == self.rank:
            self.start()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._proc = None

    def __enter__(self) -> CpuHog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class KillAt(Injector):
    rank: int
    step: int
    attempt: int = 0

    def after_step(self, rank: int, step: int) -> None:
        if rank == self.rank and step == self.step and restart_count() == self.attempt:
            os.kill(os.getpid(), signal.SIGKILL)


class _Many(Injector):
    def __init__(self, items: list[Injector]) -> None:
        self.items = items

    def before_compute(self, rank: int, step: int, samples: int) -> None:
        for i in self.items:
            i.before_compute(rank, step, samples)

    def after_compute(self, rank: int, step: int, compute_s: float) -> None:
        for i in self.items:
            i.after_compute(rank, step, compute_s)

    def after_step(self, rank: int, step: int) -> None:
        for i in self.items:
            i.after_step(rank, step)

    def close(self) -> None:
        for i in self.items:
            i.close()


_KINDS = {"speed": EmulatedSpeed, "slow": SleepSlowdown, "hog": CpuHog, "kill": KillAt}


def from_spec(spec: list[dict[str, Any]] | None) -> Injector:
    """``[{"kind": "speed", "speeds": [1, 1, 1, 0.5]}, {"kind": "kill", "rank": 1, "step": 3}]``."""
    if not spec:
        return Injector()
    if not isinstance(spec, list):
        raise ValueError(f"injection spec must be a list of objects, got {type(spec).__name__}")
    items: list[Injector] = []
    for d in spec:
        if not isinstance(d, dict) or d.get("kind") not in _KINDS:
            raise ValueError(f"injection entries need 'kind' in {sorted(_KINDS)}, got {d!r}")
        kw = {k: v for k, v in d.items() if k != "kind"}
        if d["kind"] == "speed":
            kw["speeds"] = tuple(kw.get("speeds", ()))
        try:
            items.append(_KINDS[d["kind"]](**kw))
        except TypeError as e:
            raise ValueError(f"bad arguments for injection {d!r}: {e}") from None
    return _Many(items)
