"""Timing and memory measurement for benchmarks.

On shared 2-core machines wall-clock numbers vary by +-30 %, so claims are ratios measured side by
side: :func:`compare` interleaves the candidates (A B A B ...) after a warm-up and reports medians.
:func:`time_subprocess` times whole commands and reads each child's own peak RSS from the kernel
(``wait4``), which is exact and immune to sampling gaps. :class:`PeakMemory` tracks the peak RSS of
this process (the kernel's high-water mark, reset on entry) and, with CUDA, the torch allocator's
peak.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PeakMemory",
    "SubprocessResult",
    "Timing",
    "compare",
    "current_rss_bytes",
    "time_callable",
    "time_subprocess",
]


@dataclass(frozen=True)
class Timing:
    """Seconds per repeat: all samples and their median, min and max."""

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Timing needs at least one sample")

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def repeats(self) -> int:
        return len(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "min_s": self.min,
            "max_s": self.max,
            "repeats": self.repeats,
        }


def _sync(sync: Callable[[], None] | None) -> None:
    if sync is not None:
        sync()


def _check_counts(warmup: int, repeats: int) -> None:
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


def time_callable(
    fn: Callable[[], Any],
    *,
    repeats: int = 5,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before and after each timed call so
    asynchronous device work is counted.
    """
    _check_counts(warmup, repeats)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        _sync(sync)
        t0 = time.perf_counter()
        fn()
        _sync(sync)
        samples.append(time.perf_counter() - t0)
    return Timing(tuple(samples))


def compare(
    candidates: Mapping[str, Callable[[], Any]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time several callables interleaved (A B C A B C ...), so drift hits all alike.

    Returns ``{name: Timing}``; ratios of medians are the numbers to report.
    """
    _check_counts(warmup, repeats)
    if len(candidates) < 1:
        raise ValueError("compare needs at least one candidate")
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    for i in range(repeats):
        # alternate the order each round so neither candidate always runs first
        order = list(candidates.items()) if i % 2 == 0 else list(candidates.items())[::-1]
        for name, fn in order:
            _sync(sync)
            t0 = time.perf_counter()
            fn()
            _sync(sync)
            samples[name].append(time.perf_counter() - t0)
    return {k: Timing(tuple(v)) for k, v in samples.items()}


@dataclass(frozen=True)
class SubprocessResult:
    """One finished command: wall seconds, its own peak RSS in bytes, exit code, output."""

    seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: str = ""
    stderr: str = ""


# A tiny launcher: forked from a big parent (pytest with torch loaded), a child's ru_maxrss would
# include the parent's resident pages up to its exec. The launcher is small, so the target forked
# from it starts small, and the launcher reports the target's own ru_maxrss from wait4.
_LAUNCHER = r"""
import os, sys
fd, cmd = int(sys.argv[1]), sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.close(fd)
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        sys.stderr.write(f"cannot run {cmd[0]!r}: {e}\n")
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
os.write(fd, str(usage.ru_maxrss).encode())
os.close(fd)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def time_subprocess(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> SubprocessResult:
    """Run ``cmd`` once and measure its wall time and exact peak RSS (``ru_maxrss`` via ``wait4``).

    The peak is the command's own process (grandchildren are not included), measured through a
    small launcher so the caller's memory does not leak into it. With ``check=True`` a non-zero
    exit raises ``subprocess.CalledProcessError`` carrying stdout and stderr. On ``timeout`` the
    command is killed and ``subprocess.TimeoutExpired`` raised.
    """
    if not cmd:
        raise ValueError("empty command")
    full_env = None if env is None else {**os.environ, **env}
    r, w = os.pipe()
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(w), *map(str, cmd)],
            env=full_env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(w,),
            start_new_session=True,
        )
    finally:
        os.close(w)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        os.close(r)
        raise
    seconds = time.perf_counter() - t0
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    # ru_maxrss is KiB on Linux, bytes on macOS
    peak = int(raw or 0) * (1 if sys.platform == "darwin" else 1024)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, list(cmd), stdout, stderr)
    return SubprocessResult(seconds, peak, proc.returncode, stdout, stderr)


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; falls back to the lifetime peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r * (1 if sys.platform == "darwin" else 1024)


def _read_vm_hwm() -> int | None:
    """Peak RSS of this process since the last reset (``VmHWM``), in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_vm_hwm() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ``clear_refs``); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class PeakMemory:
    """Context manager recording the peak RSS of this process and torch's CUDA allocator peak.

    >>> with PeakMemory() as mem:  # doctest: +SKIP
    ...     work()
    >>> mem.peak_rss_bytes, mem.rss_growth_bytes

    ``rss_growth_bytes`` is the peak minus the RSS at entry: what the block itself added. On Linux
    the kernel's high-water mark is reset on entry (``/proc/self/clear_refs``) and read on exit,
    which is exact; where that is refused, the RSS is sampled every ``interval`` seconds, and short
    spikes between samples can be missed (use :func:`time_subprocess` for an exact peak then).
    """

    interval: float = 0.005
    device: Any = None
    start_rss_bytes: int = 0
    peak_rss_bytes: int = 0
    cuda_peak_bytes: int | None = None
    exact: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def rss_growth_bytes(self) -> int:
        return max(0, self.peak_rss_bytes - self.start_rss_bytes)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss_bytes = max(self.peak_rss_bytes, current_rss_bytes())

    def __enter__(self) -> PeakMemory:
        self.exact = _reset_vm_hwm() and _read_vm_hwm() is not None
        self.start_rss_bytes = self.peak_rss_bytes = current_rss_bytes()
        self._cuda = None
        try:
            import torch

            if torch.cuda.is_available():
                self._cuda = torch.device(self.device or "cuda")
                torch.cuda.reset_peak_memory_stats(self._cuda)
        except ImportError:  # pragma: no cover
            pass
        self._stop.clear()
        if not self.exact:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_bytes = max(self.peak_rss_bytes, current_rss_bytes())
        if self.exact:
            self.peak_rss_bytes = max(self.peak_rss_bytes, _read_vm_hwm() or 0)
        if self._cuda is not None:
            import torch

            self.cuda_peak_bytes = int(torch.cuda.max_memory_allocated(self._cuda))
