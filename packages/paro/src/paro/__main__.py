"""``python -m paro {demo,plan,bench}``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from paro.strategy import PAPER_STRATEGIES, Strategy
from shared.cli import positive_float as _positive_float
from shared.cli import positive_int as _positive_int


def _fraction(s: str) -> float:
    v = _positive_float(s)
    if v > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {v}")
    return v


def _strategies(s: str) -> tuple[str, ...]:
    try:
        return tuple(Strategy.parse(x).name for x in s.split(",") if x.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _rel(a, b) -> float:
    """Norm-wise relative difference ``||a - b|| / ||b||``."""
    return float((a - b).norm() / b.norm())


def cmd_plan(a: argparse.Namespace) -> int:
    from paro.cost import ModelStates
    from paro.planner import format_table, plan
    from paro.topology import Links, Topology

    topo = Topology(a.world_size, a.group_size)
    states = ModelStates.mixed_precision(a.params * 1e9, a.trainable_fraction)
    links = Links(a.bw_intra * 1e9, a.bw_inter * 1e9, inter_shared=a.inter_shared)
    rows = plan(
        states,
        topo,
        links,
        a.memory_gb * 1e9,
        a.accum_steps,
        compute_s=a.compute_s,
        activation_bytes=a.activation_gb * 1e9,
        candidates=a.candidates,
    )
    print(
        f"model {a.params:g}B params (trainable {a.trainable_fraction:g}), {topo.n} ranks in "
        f"{topo.g} groups of {topo.m}, {a.memory_gb:g} GB/rank, A={a.accum_steps}, "
        f"B'={a.bw_intra:g} GB/s, B={a.bw_inter:g} GB/s (bf16 params/grads, 12 B/param Adam)"
    )
    print(format_table(rows))
    best = rows[0]
    if best.fits:
        print(f"chosen: {best.strategy.name} ({best.strategy.system})")
        return 0
    print("no strategy fits the memory limit", file=sys.stderr)
    return 1


def cmd_demo(a: argparse.Namespace) -> int:
    from paro.experiment import RunConfig, run_demo
    from shared import spawn

    strategies = a.strategies
    print(
        f"paro demo: {a.world_size} ranks in groups of {a.group_size}, strategies "
        f"{', '.join(strategies)}; {a.steps} steps x {a.accum_steps} micro-steps, AdamW MLP"
    )
    t0 = time.perf_counter()
    cfg = RunConfig(
        group_size=a.group_size,
        strategies=strategies,
        steps=a.steps,
        accum_steps=a.accum_steps,
        width=a.width,
        show_progress=True,
    )
    res = spawn(run_demo, a.world_size, args=(cfg,), timeout_s=600)
    head = (
        f"{'strategy':<8} {'system':<20} {'intra B':>9} {'(model)':>9} {'inter B':>9} "
        f"{'(model)':>9} {'params B':>9} {'grads B':>8} {'optim B':>8} {'mem=model':>9} "
        f"{'rel Δ vs DDP':>14} {'loss':>8}"
    )
    print(head)
    print("-" * len(head))
    all_ok = True
    for name in strategies:
        r0 = res[0]["strategies"][name]
        bytes_ok = all(
            r["strategies"][name]["bytes"] == r["strategies"][name]["bytes_model"] for r in res
        )
        mem_ok = all(
            r["strategies"][name]["memory"] == r["strategies"][name]["memory_model"] for r in res
        )
        diff = max(_rel(r["strategies"][name]["params"], r["ddp_params"]) for r in res)
        all_ok &= bytes_ok and mem_ok and diff <= 1e-6
        b, bm, mem = r0["bytes"], r0["bytes_model"], r0["memory"]
        print(
            f"{name:<8} {Strategy.parse(name).system:<20} {b['intra']:>9} {bm['intra']:>9} "
            f"{b['inter']:>9} {bm['inter']:>9} {mem['params']:>9} {mem['grads']:>8} "
            f"{mem['optimizer_states']:>8} {'yes' if mem_ok else 'NO':>9} {diff:>14.2e} "
            f"{r0['losses'][-1]:>8.4f}"
        )
    print(
        f"bytes: rank 0, {a.steps} steps, ring model of recorded ops; memory in bytes (persistent "
        f"shards); rel Δ = ||θ - θ_DDP|| / ||θ_DDP||. All strategies match the cost model, the "
        f"memory model and DDP (<= 1e-6): {all_ok}; {time.perf_counter() - t0:.1f}s"
    )
    h = [r["horing"] for r in res]
    ho_ok = all(x["equal"] and x["bytes"]["intra"] == x["model"]["intra"] for x in h) and all(
        x["bytes"]["inter"] == x["model"]["inter"] for x in h
    )
    print(
        f"HO-Ring all-reduce of {h[0]['numel']} floats == dist.all_reduce on every rank: "
        f"{all(x['equal'] for x in h)}; {h[0]['sends']} ring steps per rank "
        f"(flat ring: {2 * (a.world_size - 1)}); bytes per rank intra {h[0]['bytes']['intra']} / "
        f"inter {h[0]['bytes']['inter']} (model {h[0]['model']['intra']:.0f} / "
        f"{h[0]['model']['inter']:.0f}): {ho_ok}"
    )
    pl_ok = True
    parts = []
    for name, row in res[0]["per_layer"].items():
        bound = row["per_layer"]["steady"] + 2 * row["layer_gathered_bytes"]
        ok = all(
            r["per_layer"][name]["per_layer"]["peak"]
            <= r["per_layer"][name]["per_layer"]["steady"]
            + 2 * r["per_layer"][name]["layer_gathered_bytes"]
            for r in res
        )
        pl_ok &= ok
        parts.append(
            f"{name} {row['per_layer']['peak']} B vs whole-model {row['whole']['peak']} B "
            f"(x{row['per_layer']['peak'] / row['whole']['peak']:.2f}; <= steady + 2 layers "
            f"{bound} B: {ok})"
        )
    print(
        "per-layer gathering, 8-layer model, peak bytes of a step (exact accounting): "
        + "; ".join(parts)
    )
    return 0 if all_ok and ho_ok and pl_ok else 1


def cmd_bench(a: argparse.Namespace) -> int:
    from paro.bench import run_bench

    run_bench(a.output, quick=a.quick, emulation=not a.no_emulation, deepspeed=not a.no_deepspeed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m paro", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="train a small model under several strategies on real ranks")
    d.add_argument("--world-size", type=_positive_int, default=4)
    d.add_argument("--group-size", type=_positive_int, default=2)
    d.add_argument("--steps", type=_positive_int, default=3)
    d.add_argument("--accum-steps", type=_positive_int, default=2)
    d.add_argument("--width", type=_positive_int, default=64)
    d.add_argument("--strategies", type=_strategies, default=PAPER_STRATEGIES)
    d.set_defaults(fn=cmd_demo)
    q = sub.add_parser("plan", help="print the memory/communication table and the chosen strategy")
    q.add_argument("--params", type=_positive_float, default=6.74, help="billions of parameters")
    q.add_argument("--trainable-fraction", type=_fraction, default=1.0)
    q.add_argument("--world-size", type=_positive_int, default=32)
    q.add_argument("--group-size", type=_positive_int, default=8)
    q.add_argument("--memory-gb", type=_positive_float, default=80.0)
    q.add_argument("--activation-gb", type=float, default=0.0)
    q.add_argument("--accum-steps", type=_positive_int, default=4)
    q.add_argument("--bw-intra", type=_positive_float, default=150.0, help="GB/s per rank")
    q.add_argument("--bw-inter", type=_positive_float, default=12.5, help="GB/s per rank")
    q.add_argument("--inter-shared", action="store_true", help="one inter link per group")
    q.add_argument("--compute-s", type=float, default=0.0, help="compute seconds per micro-step")
    q.add_argument("--candidates", type=_strategies, default=PAPER_STRATEGIES)
    q.set_defaults(fn=cmd_plan)
    b = sub.add_parser("bench", help="run every claim and write results/paro.json")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--output", default=None)
    b.add_argument("--no-emulation", action="store_true", help="skip the namespace emulation")
    b.add_argument("--no-deepspeed", action="store_true", help="skip the DeepSpeed baseline")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.cmd == "plan" and (a.activation_gb < 0 or a.compute_s < 0):
        parser.error("--activation-gb and --compute-s must be >= 0")
    if a.cmd == "demo" and a.world_size % a.group_size:
        parser.error(
            f"--group-size {a.group_size} does not divide --world-size {a.world_size}: "
            "PaRO groups must be equal"
        )
    if a.cmd == "bench":
        out = Path(a.output) if a.output else Path("results") / "paro.json"
        if out.is_dir():
            parser.error(
                f"--output {out} is a directory; give a file path such as {out / 'paro.json'}"
            )
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            parser.error(f"cannot create the output directory {out.parent}: {e}")
        if not os.access(out.parent, os.W_OK):
            parser.error(f"the output directory {out.parent} is not writable")
    try:
        return a.fn(a)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
