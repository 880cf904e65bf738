"""``python -m bfn_solver {demo,sample,train,bench}``.

- ``demo``: every sampler on the Gaussian-mixture and Markov-chain oracle suites, error vs NFE;
  writes ``table.md``, ``curves.json`` and ``curves.png`` to ``--out`` (default ``bfn_solver_demo/``).
- ``sample``: draw samples from an oracle suite or a checkpoint written by ``train``.
- ``train``: train the digits (continuous) or Markov-chain (discrete) example model.
- ``bench``: run every claim and write ``results/bfn-solver.json``.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import sys
import time
from pathlib import Path

import torch

from shared import atomic_write_bytes, atomic_write_text, progress, write_results
from shared.cli import positive_int as _positive_int

DIST = "bfn-solver"


class _UsageError(Exception):
    pass


def _nfe_list(s: str) -> list[int]:
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"NFE values must be integers >= 1, got {s!r}")
    return vals


def _table(results: dict[str, dict], nfes: list[int]) -> str:
    lines = []
    for suite, curves in results.items():
        lines.append(f"\n### {suite}: error vs NFE (lower is better)\n")
        lines.append("| sampler | " + " | ".join(str(k) for k in nfes) + " |")
        lines.append("|---|" + "---|" * len(nfes))
        for nm, c in curves.items():
            lines.append(f"| {nm} | " + " | ".join(f"{c[k]['error']:.4f}" for k in nfes) + " |")
    return "\n".join(lines) + "\n"


def _demo(args: argparse.Namespace) -> int:
    from bfn_solver.experiments import gmm_suite, markov_suite, plot_curves, run_curves

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for suite in (gmm_suite(n=args.n), markov_suite(n=5 * args.n)):
        results[suite.name] = run_curves(suite, args.nfe, progress=progress)
    table = _table(results, args.nfe)
    atomic_write_text(out / "table.md", table)
    atomic_write_text(out / "curves.json", json.dumps(results, indent=1, default=str))
    png = out / "curves.png"
    try:
        plot_curves(results, png, title="BFN samplers on exact oracles")
    except ImportError:
        png = None
        print("matplotlib missing (pip install 'bfn-solver[plots]'): no PNG written")
    print(table)
    for suite, curves in results.items():
        k = 10 if 10 in args.nfe else args.nfe[0]
        base = curves["bfn_original"][k]["error"]
        best = min(
            (nm for nm in curves if nm != "bfn_original"), key=lambda nm: curves[nm][k]["error"]
        )
        print(
            f"{suite}: at NFE={k} original sampler error {base:.4f}, best solver {best} "
            f"{curves[best][k]['error']:.4f} ({curves[best][k]['error'] / max(base, 1e-12):.2f}x)"
        )
    print(f"wrote {out / 'table.md'}, {out / 'curves.json'}" + (f", {png}" if png else ""))
    print(f"demo took {time.perf_counter() - t0:.1f} s")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bfn_solver.bench import bench_claims, trained_table
    from bfn_solver.experiments import plot_curves

    t0 = time.perf_counter()
    claims, extra = bench_claims(quick=args.quick, progress=progress)
    path = write_results(
        DIST,
        claims,
        args.output,
        quick=args.quick,
        meta={"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()},
    )
    png = Path(path).with_name(f"{DIST}-curves.png")
    tr = extra["trained"]
    panels = dict(extra["oracle_curves"])
    if "curves" in tr["digits"]:
        panels["trained digits (classifier-feature Frechet distance)"] = {
            nm: {k: {"error": v["fd_features"]} for k, v in c.items()}
            for nm, c in tr["digits"]["curves"].items()
        }
    panels["trained markov (bigram TV)"] = {
        nm: {k: {"error": v["bigram_tv"]} for k, v in c.items()}
        for nm, c in tr["markov"]["curves"].items()
    }
    try:
        plot_curves(panels, png, title="quality vs NFE: oracle suites (error) and trained models")
        print(f"wrote {png}")
    except ImportError:
        print("matplotlib missing (pip install 'bfn-solver[plots]'): no PNG written")
    for c in claims:
        print(
            f"{c.name:24s} measured={c.measured!s:.8} baseline={c.baseline!s:.8} "
            f"target={c.comparator} {c.target!s:.8} holds={c.holds}"
        )
    print(trained_table(extra["trained"]))
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return 0


def _train(args: argparse.Namespace) -> int:
    from bfn_solver.models import ContinuousMLP, DiscreteMLP
    from bfn_solver.oracles import MarkovChainOracle
    from bfn_solver.schedules import ContinuousSchedule, DiscreteSchedule
    from bfn_solver.training import BFNTrainer, TrainConfig, load_digits_data, save_checkpoint

    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, loss=args.loss, device=args.device
    )
    if args.task == "digits":
        model, data, sc = ContinuousMLP(64), load_digits_data(), ContinuousSchedule(1e-3)
        meta = {"task": "digits"}
    else:
        chain = MarkovChainOracle.random_sparse(6, 12, 2, seed=0)
        model, sc = DiscreteMLP(12, 6, hidden=256), DiscreteSchedule(6, 2.5)
        data = chain.sample(20000, torch.Generator().manual_seed(1))
        meta = {"task": "markov"}
    tr = BFNTrainer(model, data, sc, cfg)
    losses = tr.train(progress=lambda it: progress(it, desc=f"train {args.task}"))
    save_checkpoint(args.out, tr.ema_model, sc, **meta)
    print(
        f"trained {args.task} for {args.steps} steps: loss {losses[0]:.3f} -> "
        f"{sum(losses[-50:]) / len(losses[-50:]):.3f}; wrote {args.out} (with its schedule)"
    )
    return 0


def _suite_error_text(e: float, comp: dict) -> str:
    """The suite error with what it is made of; an error of 0 means 'at the sampling floor'."""
    if "bigram_tv" in comp:
        return (
            f"; suite error {e:.4f} = max(0, bigram TV {comp['bigram_tv']:.4f} - sampling floor "
            f"{comp['bigram_tv_floor']:.4f} of exact samples); invalid transitions "
            f"{comp['invalid_rate']:.4f}"
        )
    return (
        f"; suite error {e:.4f} = max(0, mode-weight TV {comp['mode_tv']:.4f} - sampling floor "
        f"{comp['mode_tv_floor']:.4f}) + |variance ratio {comp['variance_ratio']:.4f} - 1|"
    )


def _sample(args: argparse.Namespace) -> int:
    from bfn_solver.experiments import gmm_suite, markov_suite
    from bfn_solver.samplers import CONTINUOUS_SAMPLERS, DISCRETE_SAMPLERS
    from bfn_solver.schedules import ContinuousSchedule
    from bfn_solver.training import load_checkpoint

    if args.checkpoint is not None:
        try:
            den, sc, meta = load_checkpoint(args.checkpoint)
        except (ValueError, OSError) as e:
            raise _UsageError(str(e)) from None
        if isinstance(sc, ContinuousSchedule):
            table = CONTINUOUS_SAMPLERS
            shape = (args.n, int(meta.get("model_config", {}).get("dim", 64)))
        else:
            table = DISCRETE_SAMPLERS
            shape = (args.n, den.length, den.num_classes)
        err = None
    else:
        suite = gmm_suite(n=args.n) if args.suite == "gmm" else markov_suite(n=args.n)
        den, sc, shape, table, err = (
            suite.denoiser,
            suite.schedule,
            suite.shape,
            suite.samplers,
            suite.error,
        )
    if args.sampler is None:
        args.sampler = "bfn_solver_pp2" if isinstance(sc, ContinuousSchedule) else "bfn_solver2"
    if args.sampler not in table:
        kind = "continuous" if isinstance(sc, ContinuousSchedule) else "discrete"
        raise _UsageError(
            f"unknown sampler {args.sampler!r} for {kind} data; choose from {sorted(table)}"
        )
    fn = table[args.sampler]
    kw = {}
    if args.eta is not None:
        if "eta" not in inspect.signature(fn).parameters:
            raise _UsageError(f"{args.sampler} starts from the prior at t = 0 and takes no --eta")
        kw["eta"] = args.eta
    try:
        with torch.no_grad():
            r = fn(
                den, shape, args.nfe, sc, generator=torch.Generator().manual_seed(args.seed), **kw
            )
    except (ValueError, TypeError) as e:
        raise _UsageError(f"{args.sampler}: {e}") from None
    msg = f"{args.sampler}: {tuple(r.samples.shape)} samples with {r.nfe} NFE"
    if err is not None:
        e, comp = err(r.samples)
        msg += _suite_error_text(e, comp)
    print(msg)
    if args.out is not None:
        buf = io.BytesIO()
        torch.save(r.samples, buf)
        atomic_write_bytes(args.out, buf.getvalue())
        print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bfn_solver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default 1: the ops are small; more threads only add "
        "contention on a shared 2-core machine)",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="all samplers on the oracle suites; table + PNG")
    d.add_argument("--out", default="bfn_solver_demo", help="output directory")
    d.add_argument("--nfe", type=_nfe_list, default=[5, 10, 20, 50, 100])
    d.add_argument("--n", type=_positive_int, default=4000, help="samples per run")
    d.set_defaults(func=_demo)
    b = sub.add_parser("bench", help="run every claim, write results/bfn-solver.json")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--output", default=None, help="results path (default results/bfn-solver.json)")
    b.set_defaults(func=_bench)
    t = sub.add_parser("train", help="train an example model")
    t.add_argument("--task", choices=("digits", "markov"), default="digits")
    t.add_argument("--steps", type=_positive_int, default=2000)
    t.add_argument("--batch-size", type=_positive_int, default=256)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--loss", choices=("continuous", "discrete_time"), default="continuous")
    t.add_argument("--device", default="cpu")
    t.add_argument("--out", default="bfn_model.pt")
    t.set_defaults(func=_train)
    from bfn_solver.samplers import CONTINUOUS_SAMPLERS, DISCRETE_SAMPLERS

    s = sub.add_parser(
        "sample",
        help="sample from an oracle suite or a trained checkpoint",
        description="Samplers for continuous data (gmm suite, digits checkpoints): "
        + ", ".join(CONTINUOUS_SAMPLERS)
        + ". Samplers for discrete data (markov suite and checkpoints): "
        + ", ".join(DISCRETE_SAMPLERS)
        + ".",
    )
    s.add_argument("--suite", choices=("gmm", "markov"), default="gmm")
    s.add_argument(
        "--checkpoint", default=None, help="a model written by `python -m bfn_solver train`"
    )
    s.add_argument(
        "--sampler",
        default=None,
        help="sampler name (default: bfn_solver_pp2 for continuous data, bfn_solver2 for "
        "discrete); see the lists above",
    )
    s.add_argument(
        "--eta",
        type=float,
        default=None,
        help="start time offset in BFN time (default: the sampler's, 1e-3; the trained digits "
        "model is documented to need 0.01)",
    )
    s.add_argument("--nfe", type=_positive_int, default=10)
    s.add_argument("--n", type=_positive_int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="save samples (torch.save) here")
    s.set_defaults(func=_sample)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (_UsageError, ValueError, TypeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
