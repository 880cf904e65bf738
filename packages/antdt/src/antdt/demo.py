"""``python -m antdt demo``: AntDT-DD vs plain DDP with a 2x-slow rank (4 gloo ranks, emulated
device speeds, real DDP, master over gRPC), then async workers SIGKILLed mid-shard."""

from __future__ import annotations

import threading
import time

from shared import progress, spawn

from .bench import _rank_main, _steady
from .controller import ControllerConfig
from .faults import kill_workers_trial
from .master import Master, MasterConfig
from .sharding import ShardConfig

__all__ = ["demo"]


def demo(world_size: int = 4, steps: int = 30, timeline: str | None = None) -> int:
    if not 2 <= world_size <= 8 or steps < 6:
        print("demo: need 2 <= --world-size <= 8 and --steps >= 6")
        return 2
    t0 = time.monotonic()
    speed = 1000.0
    speeds = [speed] * (world_size - 1) + [speed / 2]
    B = 350 * world_size
    n = B * steps
    masters = {}
    for mode in ("off", "dd"):
        ctl = ControllerConfig(mode=mode, global_batch=B, world_size=world_size)
        masters[mode] = Master(MasterConfig(ShardConfig(n, 100), ctl))
        masters[mode].start()
    base = {"dataset_size": n, "features": 16, "hidden": 32, "dtype": "float32", "max_steps": steps,
            "inject": [{"kind": "speed", "speeds": speeds}]}  # fmt: skip
    plan = [
        {"kind": "job", "name": m, "address": masters[m].address, "cfg": base}
        for m in ("off", "dd")
    ]
    bar = progress(total=2 * n, desc="training (DDP, then AntDT-DD)")
    stop = threading.Event()

    def poll() -> None:
        last = 0
        while not stop.wait(0.5):
            done = sum(m.service.counts()["committed_samples"] for m in masters.values())
            bar.update(done - last)
            last = done

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        runs = spawn(_rank_main, world_size, args=(plan,), timeout_s=900)[0]
        status = masters["dd"].status(timeline=True)
    finally:
        stop.set()
        th.join(2)
        bar.close()
        for m in masters.values():
            m.stop()
    ddp, dd = _steady(runs[0]), _steady(runs[1])
    print(
        f"emulated speeds {speeds} samples/s; global batch {B}; ideal {sum(speeds):.0f} samples/s"
    )
    print(f"plain DDP (equal batches): {ddp:7.0f} samples/s")
    print(f"AntDT-DD:                  {dd:7.0f} samples/s  ({dd / ddp:.2f}x DDP, {dd / sum(speeds):.0%} of ideal)"
          f"  sizes {runs[1]['sizes'][-1]}")  # fmt: skip
    for a in status["actions"]:
        print(f"  controller: {a['kind']} {a.get('sizes', '')} decided at step {a['decided_at_step']}, "
              f"applied at step {a['effective_step']} on every rank")  # fmt: skip
    r = kill_workers_trial(0, n=2000, shard_size=50, workers=3, kills=3)
    print(f"3 async workers, {r.kills} SIGKILLed mid-shard: {r.n} samples, {r.missing} missing, "
          f"{r.duplicated} duplicated -> {'exactly once' if r.exactly_once else 'NOT exactly once'}")  # fmt: skip
    if timeline:
        from .timeline import plot_timeline

        plot_timeline(status, timeline)
        print(f"timeline: {timeline}")
    print(f"demo took {time.monotonic() - t0:.0f}s")
    return 0
