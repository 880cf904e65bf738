import subprocess
import sys

import pytest

from shared import PeakMemory, Timing, compare, time_callable, time_subprocess


def test_time_callable_counts_warmup_and_repeats():
    calls = []
    t = time_callable(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and t.repeats == 4
    assert t.min <= t.median <= t.max
    with pytest.raises(ValueError, match="repeats"):
        time_callable(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="at least one sample"):
        Timing(())


def test_compare_interleaves_and_alternates_order():
    order = []
    out = compare(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1
    )
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert set(out) == {"a", "b"} and out["a"].repeats == 3


def test_sync_is_called_around_each_timed_call():
    syncs = []
    time_callable(lambda: None, repeats=2, warmup=0, sync=lambda: syncs.append(1))
    assert len(syncs) == 4


def test_subprocess_peak_rss_is_the_childs_own():
    small = time_subprocess([sys.executable, "-c", "pass"])
    big = time_subprocess(
        [sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    )
    assert big.peak_rss_bytes - small.peak_rss_bytes > 250 * 2**20
    assert small.returncode == 0 and small.seconds > 0


def test_subprocess_failure_and_timeout():
    with pytest.raises(subprocess.CalledProcessError) as e:
        time_subprocess([sys.executable, "-c", "import sys; sys.stderr.write('bad'); sys.exit(4)"])
    assert e.value.returncode == 4 and e.value.stderr == "bad"
    r = time_subprocess(
        [sys.executable, "-c", "import sys; print('out'); sys.exit(4)"], check=False
    )
    assert (r.returncode, r.stdout) == (4, "out\n")
    with pytest.raises(subprocess.TimeoutExpired):
        time_subprocess([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    missing = time_subprocess(["no-such-program-xyz"], check=False)
    assert missing.returncode == 127 and "cannot run 'no-such-program-xyz'" in missing.stderr
    with pytest.raises(ValueError, match="empty command"):
        time_subprocess([])


def _touch(b: bytearray) -> None:
    b[::4096] = b"x" * len(b[::4096])


def test_peak_memory_sees_a_short_lived_allocation():
    # the block frees its 200 MiB before exit: only a true peak measurement sees it
    with PeakMemory() as mem:
        b = bytearray(200 * 2**20)
        _touch(b)
        del b
    assert mem.exact, "Linux exposes VmHWM and clear_refs: the peak should be exact here"
    assert mem.rss_growth_bytes > 150 * 2**20
    assert mem.cuda_peak_bytes is None or mem.cuda_peak_bytes >= 0


def test_peak_memory_sampling_fallback(monkeypatch):
    import time

    import shared.bench as bench

    monkeypatch.setattr(bench, "_reset_vm_hwm", lambda: False)
    with PeakMemory(interval=0.001) as mem:
        b = bytearray(200 * 2**20)
        _touch(b)
        time.sleep(0.2)  # sampling needs the allocation to live across a few samples
        del b
    assert not mem.exact and mem.rss_growth_bytes > 150 * 2**20
