"""``python -m otgnet {demo,prepare,train,eval,bench}``.

- ``demo``: OTGNet, TGN fine-tuning and two ablations (no bottleneck, random event replay) on one
  seed of the quick bench's synthetic graph; prints AP/AF and the accuracy matrices (under a
  minute on an idle machine).
- ``prepare``: write a graph (synthetic, or read from OTGNet / JODIE / TGN-DyGLib files) to a
  parquet directory.
- ``train``: run the class-incremental protocol of a named system on a prepared graph; writes a
  checkpoint and the accuracy matrix.
- ``eval``: evaluate a checkpoint on its graph (accuracy on every task seen).
- ``bench``: every claim over >= 5 seeds in parallel processes -> ``results/otgnet.json`` and a
  heatmap ``results/otgnet-accuracy.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from shared.cli import positive_int as _positive_int
from shared.cli import probability as _prob

DIST = "otgnet"


class _UsageError(Exception):
    pass


def _fmt_matrix(m) -> str:
    m = np.asarray(m, float)
    rows = []
    for i, r in enumerate(m):
        cells = " ".join(f"{v:5.1f}" if np.isfinite(v) else "    ." for v in r)
        rows.append(f"  after task {i}: {cells}")
    return "\n".join(rows)


def _demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import torch

    from otgnet.bench import settings
    from otgnet.continual import ContinualLearner
    from otgnet.data import make_synthetic, make_tasks
    from otgnet.experiments import system_configs
    from shared import progress

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    st = settings(quick=True)  # one seed of the quick bench's graphs and sizes
    g, _ = make_synthetic(replace(st.synthetic, seed=args.seed))
    sp = make_tasks(g, st.protocol)
    print(
        f"synthetic open temporal graph: {g.num_nodes} nodes, {g.num_edges} events, 3 tasks x 2 "
        f"classes, heterophily {g.heterophily():.2f} (partners '{st.synthetic.hetero_partner}'), "
        f"test nodes per task {[len(x) for x in sp.test_nodes]}"
    )
    train = {**st.train, "epochs": args.epochs, "seed": args.seed}
    model = st.model
    out = {}
    systems = ("otgnet", "tgn_ft", "otgnet_no_ib", "otgnet_random_edges")
    bar = progress(total=len(systems) * 3 * args.epochs, desc="epochs")
    for name in systems:
        cc, mc = system_configs(name, train, model)
        lr = ContinualLearner(g, sp, cc, mc)
        res = lr.fit(progress=lambda *a: bar.update(1))
        out[name] = res
    bar.close()
    for name, r in out.items():
        print(f"{name}: AP {r.ap:.1f}%  AF {r.af:.1f} pt  train {r.events_per_s:.0f} events/s")
        print(_fmt_matrix(r.acc))
    o, f = out["otgnet"], out["tgn_ft"]
    print(
        f"OTGNet vs TGN fine-tuning: AP {o.ap:.1f} vs {f.ap:.1f}, AF {o.af:.1f} vs {f.af:.1f} "
        f"(one seed; the bench averages {5} seeds)"
    )
    print(
        f"ablations: without the bottleneck AP {out['otgnet_no_ib'].ap:.1f}, random event replay "
        f"at the same budget AP {out['otgnet_random_edges'].ap:.1f}"
    )
    print(f"demo took {time.perf_counter() - t0:.1f} s")
    return 0


def _read_graph(args: argparse.Namespace):
    from otgnet.data import (
        SyntheticConfig,
        make_synthetic,
        read_jodie_csv,
        read_otgnet_csv,
        read_tgn_npy,
    )

    labels = None
    if args.node_labels:
        try:
            labels = np.load(args.node_labels, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise _UsageError(f"cannot read --node-labels {args.node_labels}: {e}") from None
    if args.format == "synthetic":
        g, _ = make_synthetic(
            SyntheticConfig(
                n_task=args.n_task,
                n_class=args.n_class,
                nodes_per_class=args.nodes_per_class,
                heterophily=args.heterophily,
                triadic_closure=args.triadic_closure,
                hetero_partner=args.hetero_partner,
                seed=args.seed,
            )
        )
        return g
    if args.input is None:
        raise _UsageError(f"--input is required for --format {args.format}")
    if args.format == "otgnet":
        return read_otgnet_csv(args.input)
    if args.format == "jodie":
        return read_jodie_csv(args.input, node_labels=labels)
    if args.name is None:
        raise _UsageError("--name is required for --format tgn (files ml_<name>.csv/.npy)")
    return read_tgn_npy(args.input, args.name, node_labels=labels)


def _prepare(args: argparse.Namespace) -> int:
    from otgnet.data import save_graph

    g = _read_graph(args)
    save_graph(g, args.out)
    het = g.heterophily()
    print(
        f"wrote {args.out}: {g.num_nodes} nodes, {g.num_edges} events, "
        f"{g.num_classes} classes, heterophily {het:.3f}"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from otgnet.continual import ContinualLearner
    from otgnet.data import ProtocolConfig, load_graph, make_tasks
    from otgnet.experiments import system_configs
    from shared import atomic_write_bytes, atomic_write_text, progress

    torch.set_num_threads(args.threads)
    g = load_graph(args.data)
    pc = ProtocolConfig(args.n_task, args.n_class, blurry=args.blurry)
    sp = make_tasks(g, pc)
    train = {
        "epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "device": args.device,
    }
    cc, mc = system_configs(args.system, train, {})
    lr = ContinualLearner(g, sp, cc, mc)
    bar = progress(total=args.n_task * args.epochs, desc=f"train {args.system}")
    res = lr.fit(progress=lambda *a: bar.update(1))
    bar.close()
    out = Path(args.out)
    ckpt = {
        "format": "otgnet-checkpoint",
        "version": 1,
        "system": args.system,
        "continual": asdict(cc),
        "model_config": asdict(mc),
        "protocol": asdict(pc),
        "task": lr.task,
        "state_dict": lr.model.state_dict(),
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(out / "model.pt", buf.getvalue())
    atomic_write_text(out / "result.json", json.dumps(res.to_dict(), indent=1, default=str))
    print(f"{args.system}: AP {res.ap:.1f}%  AF {res.af:.1f} pt")
    print(_fmt_matrix(res.acc))
    print(f"wrote {out / 'model.pt'} and {out / 'result.json'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from otgnet.continual import ContinualConfig, ContinualLearner
    from otgnet.data import ProtocolConfig, load_graph, make_tasks
    from otgnet.nn.model import OTGNetConfig

    torch.set_num_threads(args.threads)
    path = Path(args.checkpoint)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable, truncated or not a torch file
        raise _UsageError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(ck, dict) or ck.get("format") != "otgnet-checkpoint":
        raise _UsageError(
            f"{path} is not an otgnet checkpoint (written by `python -m otgnet train`)"
        )
    g = load_graph(args.data)
    pc = ProtocolConfig(**ck["protocol"])
    sp = make_tasks(g, pc)
    cc = ContinualConfig(**{**ck["continual"], "device": args.device})
    if cc.model == "otgnet":
        mc = OTGNetConfig(**ck["model_config"])
    else:
        from otgnet.nn.tgn import TGNConfig

        mc = TGNConfig(**ck["model_config"])
    lr = ContinualLearner(g, sp, cc, mc)
    try:
        lr.model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise _UsageError(f"checkpoint {path} does not fit graph {args.data}: {e}") from None
    lr.task = int(ck["task"])
    ev = lr.evaluate()
    for j, a in enumerate(ev["test"]):
        print(f"task {j}: test accuracy {a:.1f}% ({len(sp.test_nodes[j])} nodes)")
    print(f"AP (mean over tasks): {np.nanmean(ev['test']):.1f}%")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from otgnet.bench import bench_claims
    from otgnet.metrics import plot_accuracy_matrices
    from shared import progress, write_results

    t0 = time.perf_counter()
    claims, extra = bench_claims(
        quick=args.quick, progress=progress, workers=args.workers, seeds=args.seeds
    )
    agg = extra["aggregate"]
    meta = {
        "seconds": time.perf_counter() - t0,
        "settings": extra["settings"],
        "summary": {
            k: {kk: v[kk] for kk in ("ap_mean", "ap_std", "af_mean", "af_std", "acc_mean")}
            for k, v in agg.items()
        },
    }
    path = write_results(DIST, claims, args.output, quick=args.quick, meta=meta)
    png = Path(path).with_name(f"{Path(path).stem}-accuracy.png")  # otgnet -> otgnet-accuracy
    try:
        plot_accuracy_matrices(
            {
                k: np.asarray(agg[k]["acc_mean"])
                for k in (
                    "otgnet",
                    "otgnet_no_ib",
                    "otgnet_random_edges",
                    "tgn_ft",
                    "tgn_random_replay",
                )
                if k in agg
            },
            png,
            title=f"test accuracy (%), mean of {agg['otgnet']['n']} seeds",
        )
        print(f"wrote {png}")
    except ImportError:
        print("matplotlib missing (pip install 'otgnet[plots]'): no heatmap written")
    for name, a in sorted(agg.items()):
        print(
            f"{name:28s} AP {a['ap_mean']:5.1f} ± {a['ap_std']:4.1f}   AF {a['af_mean']:5.1f} ± {a['af_std']:4.1f}"
        )
    for c in claims:
        print(
            f"{c.name:32s} measured={c.measured!s:.8} baseline={c.baseline!s:.8} "
            f"target={c.comparator} {c.target!s:.8} holds={c.holds}"
        )
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    from otgnet.data.synthetic import HETERO_PARTNERS
    from otgnet.experiments import SYSTEMS

    ap = argparse.ArgumentParser(
        prog="python -m otgnet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="OTGNet vs TGN fine-tuning on the synthetic graph")
    d.add_argument("--epochs", type=_positive_int, default=10)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=_positive_int, default=1)
    d.set_defaults(func=_demo)

    p = sub.add_parser("prepare", help="write a graph (synthetic or read from files) as parquet")
    p.add_argument("--format", choices=("synthetic", "otgnet", "jodie", "tgn"), default="synthetic")
    p.add_argument("--input", default=None, help="csv file (otgnet, jodie) or directory (tgn)")
    p.add_argument("--name", default=None, help="dataset name for --format tgn (ml_<name>.csv)")
    p.add_argument("--node-labels", default=None, help=".npy of node classes (jodie, tgn)")
    p.add_argument("--n-task", type=_positive_int, default=3)
    p.add_argument("--n-class", type=_positive_int, default=2)
    p.add_argument("--nodes-per-class", type=_positive_int, default=40)
    p.add_argument("--heterophily", type=_prob, default=0.3)
    p.add_argument("--triadic-closure", type=_prob, default=0.3)
    p.add_argument(
        "--hetero-partner",
        choices=HETERO_PARTNERS,
        default="older",
        help="heterophilous partners: 'older' tasks' nodes (dossier) or 'uniform' over other classes",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_prepare)

    t = sub.add_parser("train", help="run the class-incremental protocol on a prepared graph")
    t.add_argument("--data", required=True, help="directory written by `prepare`")
    t.add_argument("--system", choices=SYSTEMS, default="otgnet")
    t.add_argument("--n-task", type=_positive_int, required=True)
    t.add_argument("--n-class", type=_positive_int, required=True)
    t.add_argument("--blurry", action="store_true")
    t.add_argument("--epochs", type=_positive_int, default=8)
    t.add_argument("--patience", type=int, default=3)
    t.add_argument("--batch-size", type=_positive_int, default=50)
    t.add_argument("--lr", type=float, default=5e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=_positive_int, default=2)
    t.add_argument("--out", required=True, help="output directory (model.pt, result.json)")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on its prepared graph")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=_positive_int, default=2)
    e.set_defaults(func=_eval)

    b = sub.add_parser("bench", help="every claim -> results/otgnet.json")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--output", default=None, help="results path (default results/otgnet.json)")
    b.add_argument(
        "--workers", type=_positive_int, default=None, help="parallel seed processes (default 2)"
    )
    b.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        help="seeds per system (default 5 quick, 8 full; at least 2); fewer to fit a busy machine",
    )
    b.set_defaults(func=_bench)

    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (_UsageError, ValueError, TypeError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
