"""``python -m antdt {demo,master,run,bench,plot}``."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from .launch import add_master_args

    p = argparse.ArgumentParser(
        prog="python -m antdt",
        description="AntDT: straggler-adaptive distributed training (shard service master, "
        "controller, torchrun launcher, demo, benchmark claims).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser(
        "demo", help="AntDT-DD vs plain DDP with a 2x-slow rank, then a kill mid-run"
    )
    d.add_argument("--world-size", type=int, default=4)
    d.add_argument("--steps", type=int, default=30)
    d.add_argument("--timeline", default=None, help="write the timeline PNG here")

    m = sub.add_parser("master", help="serve the shard service / monitor / controller")
    add_master_args(m)

    r = sub.add_parser(
        "run",
        help="start a master and torchrun: python -m antdt run [--master ADDR] [master options] "
        "-- <torchrun arguments>; or on Ray: python -m antdt run --backend ray --job JOB.json "
        "[--ray-address ADDR] [--ray-max-restarts N] [master options]",
    )
    r.add_argument("--master", default=None, help="use this running master (host:port)")

    b = sub.add_parser("bench", help="run every claim, write results/antdt.json")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--output", default=None)
    b.add_argument("--timeline", default=None, help="also write the DD timeline PNG here")

    t = sub.add_parser(
        "plot", help="timeline PNG (per-rank step times, actions) from a status JSON"
    )
    t.add_argument("status", help="master status JSON (python -m antdt master --status-file)")
    t.add_argument("out", help="PNG to write")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        from shared.cli import nonneg_int

        from .launch import add_master_args, run

        rest = argv[1:]
        if "--" in rest:
            i = rest.index("--")
            ours, torchrun_args = rest[:i], rest[i + 1 :]
        else:
            ours, torchrun_args = rest, []
        rp = argparse.ArgumentParser(prog="python -m antdt run")
        rp.add_argument("--master", default=None)
        rp.add_argument("--backend", choices=("torchrun", "ray"), default="torchrun")
        rp.add_argument("--job", default=None, help="(ray) JobConfig JSON file or inline JSON")
        rp.add_argument("--ray-address", default=None, help="(ray) an existing Ray cluster")
        rp.add_argument(
            "--ray-max-restarts", type=nonneg_int, default=1, help="(ray) group restarts"
        )
        a, master_args = rp.parse_known_args(ours)
        if a.backend == "ray":
            from .launch import run_ray

            return run_ray(a, master_args, torchrun_args)
        if not a.master:
            mp = argparse.ArgumentParser(prog="python -m antdt run (master options)")
            add_master_args(mp)
            mp.parse_args(master_args)  # validate here, with a clear error
        a.master_args = master_args
        return run(a, torchrun_args)
    a = _parser().parse_args(argv)
    if a.cmd == "master":
        from .launch import serve

        return serve(a)
    if a.cmd == "demo":
        from .demo import demo

        return demo(a.world_size, a.steps, a.timeline)
    if a.cmd == "bench":
        from .bench import run_bench

        return run_bench(quick=a.quick, output=a.output, timeline=a.timeline)
    if a.cmd == "plot":
        from .timeline import plot_timeline

        try:
            with open(a.status) as f:
                status = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"antdt plot: cannot read {a.status}: {e}", file=sys.stderr)
            return 2
        plot_timeline(status, a.out)
        print(f"wrote {a.out}")
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
