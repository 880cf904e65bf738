"""``python -m rlhf_place {demo,plan,train,bench}``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from shared.cli import positive_int as _pos_int


def _pos_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


# --------------------------------------------------------------------------- plan


def cmd_plan(a: argparse.Namespace) -> int:
    from rlhf_place.cost import Hardware, ModelSpec, Workload
    from rlhf_place.planner import plan
    from rlhf_place.simulator import A100_CLUSTER

    def spec(name: str, billions: float) -> ModelSpec:
        # a LLaMA-shaped model of that size: hidden ~ sqrt(Psi / (12 * layers))
        layers = max(2, round(8 * billions ** (1 / 3) * 2))
        hidden = int((billions * 1e9 / (12 * layers)) ** 0.5 / 64 + 0.5) * 64 or 64
        return ModelSpec(name, billions * 1e9, layers, hidden)

    w = Workload(
        actor=spec("actor", a.actor),
        critic=spec("critic", a.critic),
        batch=a.batch,
        prompt_len=a.prompt_len,
        gen_len=a.gen_len,
        ppo_epochs=a.ppo_epochs,
    )
    hw = Hardware(
        name=f"{a.memory_gb:g} GB devices (modelled)",
        flops=a.tflops * 1e12,
        hbm_bw=A100_CLUSTER.hbm_bw,
        memory=a.memory_gb * 1e9,
        bw_intra=a.bw_intra * 1e9,
        bw_inter=a.bw_inter * 1e9,
        devices_per_node=a.per_node,
        alpha=A100_CLUSTER.alpha,
        call_overhead_s=A100_CLUSTER.call_overhead_s,
        decode_overhead_s=A100_CLUSTER.decode_overhead_s,
        engine_decode_overhead_s=A100_CLUSTER.engine_decode_overhead_s,
    )
    ranked = plan(w, hw, a.devices)
    print(
        f"actor {a.actor:g}B, critic/reward {a.critic:g}B, {a.devices} devices "
        f"({a.per_node}/node, {a.memory_gb:g} GB), batch {a.batch}, {a.prompt_len}+{a.gen_len} "
        "tokens -- MODELLED (see rlhf_place.cost for the assumptions)"
    )
    print(f"{'plan':44s} {'s/iter':>8s} {'max GB/dev':>10s}  fits  stages (s)")
    for c in ranked[: a.top]:
        stages = " ".join(f"{k}={v:.1f}" for k, v in c.stages.items())
        print(
            f"{c.plan.label():44s} {c.total:8.1f} {max(c.memory.values()) / 1e9:10.1f}  "
            f"{'yes ' if c.fits else 'NO  '}  {stages}"
        )
    if not ranked[0].fits:
        need = min(max(c.memory.values()) for c in ranked)
        print(
            f"error: no placement fits {a.memory_gb:g} GB per device (the least needs "
            f"{need / 1e9:.1f} GB); add devices or memory",
            file=sys.stderr,
        )
        return 1
    print(f"chosen: {ranked[0].plan.label()}")
    return 0


# --------------------------------------------------------------------------- train


def _config(a: argparse.Namespace):
    from rlhf_place.config import ModelConfig, PPOConfig, RLHFConfig

    if a.config:
        p = Path(a.config)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read config file {p}: {e}") from None
        return RLHFConfig.from_dict(d)
    return RLHFConfig(
        model=ModelConfig(actor=a.actor),
        ppo=PPOConfig(),
        reward=a.reward,
        batch_size=a.batch_size,
        prompt_len=a.prompt_len,
        gen_len=a.gen_len,
        iterations=a.iterations,
        seed=a.seed,
    )


def cmd_train(a: argparse.Namespace) -> int:
    from rlhf_place.placement import make_placement
    from rlhf_place.runtime import RunOptions, merge_results, run_rank
    from shared import atomic_write_text

    cfg = _config(a)
    opts = RunOptions(engine=a.engine, zero_stage=a.zero_stage, device=a.device)
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ or (
        "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
    )
    if under_torchrun:
        import torch.distributed as dist

        from shared import destroy_distributed, init_distributed

        info = init_distributed("nccl" if a.device == "cuda" else "gloo")
        placement = make_placement(a.strategy, info.world_size, a.split)
        try:
            out = run_rank(cfg, placement, opts)
            gathered = [None] * info.world_size
            dist.all_gather_object(gathered, out)
        finally:
            destroy_distributed()
        if info.rank != 0:
            return 0
        res = merge_results(gathered, placement, opts.engine)
    else:
        from rlhf_place.launch import train

        placement = make_placement(a.strategy, a.devices, a.split)
        res = train(cfg, placement, opts, backend=a.backend, timeout_s=a.timeout)
    print(f"placement {placement.describe()}, engine {opts.engine}")
    for i, (t, s) in enumerate(zip(res.iteration_times, res.score_mean, strict=True)):
        print(f"iteration {i}: {t:.2f} s, mean reward {s:.3f}, kl {res.kl[i]:.4f}")
    if a.output:
        atomic_write_text(a.output, json.dumps(res.summary(), indent=1, default=str) + "\n")
        print(f"wrote {a.output}")
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(a: argparse.Namespace) -> int:
    from rlhf_place.bench import strategy_runs
    from rlhf_place.config import RLHFConfig
    from rlhf_place.cost import estimate
    from rlhf_place.planner import calibrate_cpu, cpu_plans
    from rlhf_place.simulator import format_table, simulate
    from shared import progress

    t0 = time.time()
    world = a.devices
    bar = progress(total=4, desc="rlhf-place demo")
    cfg = RLHFConfig(batch_size=8, gen_len=8, iterations=3)
    bar.set_postfix_str("3 placements + learning run on real processes")
    runs, learned, learn_p, comm = strategy_runs(
        world, cfg, repeats=2, learn_cfg=RLHFConfig(iterations=a.iterations)
    )
    bar.update(2)
    cal = calibrate_cpu(cfg, devices=world, comm=comm)
    modelled = {
        n: estimate(p, cal.workload, cal.hardware, world).total for n, p in cpu_plans(world).items()
    }
    bar.update(1)
    rows = simulate()
    bar.update(1)
    bar.close()
    base = runs["flatten"][0]
    print(
        f"PPO RLHF, 4 HF models (tiny Llama actor/ref, critic, rule reward), {world} processes (gloo)"
    )
    print(
        f"{'strategy':12s} {'s/iter (measured)':>18s} {'modelled':>9s} {'same tokens':>12s} {'max rel dW':>11s}"
    )
    for name, rs in runs.items():
        times = [t for r in rs for t in r.iteration_times[1:]]
        med = sorted(times)[len(times) // 2]
        d = max(
            float(
                (rs[0].final_params[k] - base.final_params[k]).norm() / base.final_params[k].norm()
            )
            for k in ("actor", "critic")
        )
        same = rs[0].response_hashes == base.response_hashes
        print(f"{name:12s} {med:18.3f} {modelled[name]:9.3f} {same!s:>12s} {d:11.2e}")
    print(f"planner's choice (calibrated cost model): {min(modelled, key=modelled.get)}")
    print(
        f"learning ({learn_p.describe()}): mean rule reward per iteration "
        + " ".join(f"{s:.2f}" for s in learned.score_mean)
    )
    print("\nMODELLED A100-cluster settings (assumptions: rlhf_place.simulator):")
    print(format_table(rows))
    try:
        from rlhf_place.timeline import plot_timelines

        out = plot_timelines({n: rs[-1] for n, rs in runs.items()}, a.plot)
        print(f"timeline plot: {out}")
    except ModuleNotFoundError as e:
        print(f"(no timeline plot: {e})")
    print(f"demo took {time.time() - t0:.0f} s")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from rlhf_place.bench import run_bench

    claims = run_bench(a.quick, a.output)
    for c in claims:
        mark = {True: "holds", False: "FAILS", None: "info"}[c.holds]
        print(f"{c.name}: {c.measured} (target {c.comparator} {c.target}) {mark}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlhf_place", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="3 placements on real processes, planner, simulator, plot")
    d.add_argument("--devices", type=_pos_int, default=2, help="processes standing in for devices")
    d.add_argument("--iterations", type=_pos_int, default=12, help="iterations of the learning run")
    d.add_argument("--plot", default="rlhf-place-timeline.png", help="timeline PNG to write")

    pl = sub.add_parser("plan", help="rank placements for a GPU cluster with the cost model")
    pl.add_argument("--actor", type=_pos_float, default=7.0, help="actor/reference size, billions")
    pl.add_argument("--critic", type=_pos_float, default=7.0, help="critic/reward size, billions")
    pl.add_argument("--devices", type=_pos_int, default=16)
    pl.add_argument("--per-node", type=_pos_int, default=8)
    pl.add_argument("--memory-gb", type=_pos_float, default=80.0)
    pl.add_argument("--tflops", type=_pos_float, default=125.0, help="effective TFLOP/s per device")
    pl.add_argument("--bw-intra", type=_pos_float, default=250.0, help="GB/s inside a node")
    pl.add_argument("--bw-inter", type=_pos_float, default=25.0, help="GB/s across nodes")
    pl.add_argument("--batch", type=_pos_int, default=256)
    pl.add_argument("--prompt-len", type=_pos_int, default=256)
    pl.add_argument("--gen-len", type=_pos_int, default=256)
    pl.add_argument("--ppo-epochs", type=_pos_int, default=1)
    pl.add_argument("--top", type=_pos_int, default=10)

    t = sub.add_parser("train", help="PPO under a placement (spawns processes, or under torchrun)")
    t.add_argument("--strategy", choices=("flatten", "interleave", "separate"), default="flatten")
    t.add_argument("--devices", type=_pos_int, default=2, help="processes (ignored under torchrun)")
    t.add_argument(
        "--split", type=_pos_int, default=None, help="actor devices / generation devices"
    )
    t.add_argument("--engine", choices=("ddp", "fsdp2", "deepspeed"), default="ddp")
    t.add_argument("--zero-stage", type=int, choices=(0, 1, 2, 3), default=1)
    t.add_argument("--backend", choices=("torchrun", "ray"), default="torchrun")
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.add_argument("--actor", choices=("tiny", "smollm2"), default="tiny")
    t.add_argument("--reward", choices=("rule", "model"), default="rule")
    t.add_argument("--batch-size", type=_pos_int, default=16)
    t.add_argument("--prompt-len", type=_pos_int, default=8)
    t.add_argument("--gen-len", type=_pos_int, default=8)
    t.add_argument("--iterations", type=_pos_int, default=4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--config", help="JSON file with an RLHFConfig (overrides the flags above)")
    t.add_argument("--timeout", type=_pos_float, default=1800.0)
    t.add_argument("--output", help="write the run summary (JSON) here")

    b = sub.add_parser("bench", help="every claim -> results/rlhf-place.json")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--output", default="results/rlhf-place.json")

    a = p.parse_args(argv)
    try:
        return {"demo": cmd_demo, "plan": cmd_plan, "train": cmd_train, "bench": cmd_bench}[a.cmd](
            a
        )
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
