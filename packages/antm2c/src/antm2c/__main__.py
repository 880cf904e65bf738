"""``python -m antm2c {demo,generate,prepare,train,eval,leaderboard,bench}``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


class _Defaults:
    """TrainConfig's defaults, read lazily (importing train pulls in torch)."""

    def __getattr__(self, name: str) -> Any:
        from .train import TrainConfig

        return getattr(TrainConfig(), name)


_TRAIN_DEFAULTS = _Defaults()


def _cutoffs(s: str) -> tuple[str, str]:
    parts = [p.strip() for p in s.split(",")]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(
            f"--cutoffs needs two comma-separated dates (train end, val end), got {s!r}"
        )
    return parts[0], parts[1]


def _int_list(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from e


def _positive(s: str) -> int:
    try:
        v = int(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from e
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def _parser() -> argparse.ArgumentParser:
    from .zoo import MODELS

    p = argparse.ArgumentParser(
        prog="python -m antm2c",
        description="AntM2C toolkit: synthetic data, streaming CSV->parquet preparation, CTR "
        "models (single- and multi-scenario), metrics, leaderboard and benchmark claims.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="generate -> prepare -> train a few models -> leaderboard")
    d.add_argument("--out", default=None, help="output directory (default: a temp dir)")
    d.add_argument("--rows", type=_positive, default=150_000)
    d.add_argument(
        "--epochs", type=_positive, default=2, help="epochs per model (a short demo budget)"
    )
    d.add_argument("--seed", type=int, default=0)

    g = sub.add_parser("generate", help="write a synthetic release in the real CSV layout")
    g.add_argument("--out", required=True)
    g.add_argument("--rows", type=_positive, default=100_000)
    g.add_argument("--users", type=_positive, default=2_000)
    g.add_argument("--items", type=_positive, default=3_000)
    g.add_argument("--parts", type=_positive, default=1)
    g.add_argument("--main-effects", type=float, default=1.0)
    g.add_argument("--image-dim", type=int, default=0)
    g.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("prepare", help="stream CSV parts into parquet partitioned by split/scene")
    r.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="directory with antm2c_*part<k> files, or the files",
    )
    r.add_argument("--out", required=True)
    r.add_argument(
        "--cutoffs",
        type=_cutoffs,
        default=None,
        help="train end,val end (default: the unofficial community split 2023-08-03,2023-08-05)",
    )
    r.add_argument("--on-malformed", choices=("quarantine", "error"), default="quarantine")
    r.add_argument("--max-malformed-fraction", type=float, default=0.05)
    r.add_argument("--entity-sep", default=",")
    r.add_argument("--max-tokens", type=_positive, default=32)
    r.add_argument(
        "--numeric-deep",
        type=_int_list,
        default=None,
        help="indices of numeric deep_features (default 14,19..26)",
    )
    r.add_argument("--block-size", type=_positive, default=512 << 10, help="CSV block, bytes")
    r.add_argument("--row-group-rows", type=_positive, default=16_384)
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--json", action="store_true", help="print the report as one JSON line")

    t = sub.add_parser("train", help="train one model on one task; writes a run directory")
    t.add_argument("--data", required=True, help="prepared data set (output of prepare)")
    t.add_argument("--model", required=True, type=str.lower, choices=sorted(MODELS))
    t.add_argument(
        "--task",
        default="multi",
        choices=("multi", "single", "cold_user", "cold_item", "multimodal"),
    )
    t.add_argument("--scene", type=int, default=None, help="scene for --task single")
    t.add_argument("--features", default=None, choices=("id", "tabular", "text", "full"))
    t.add_argument("--id-mode", default="vocab", choices=("vocab", "hash"))
    t.add_argument("--hash-buckets", type=_positive, default=1 << 18)
    t.add_argument("--image", default=None, help="item image-embedding parquet (multimodal)")
    t.add_argument(
        "--epochs",
        type=_positive,
        default=_TRAIN_DEFAULTS.epochs,
        help="maximum epochs (default %(default)s, TrainConfig's); training stops early when "
        "validation AUC has not improved for more than --patience epochs and keeps the best epoch",
    )
    t.add_argument(
        "--patience",
        type=int,
        default=_TRAIN_DEFAULTS.patience,
        help="epochs without a validation-AUC gain tolerated before stopping (default %(default)s)",
    )
    t.add_argument("--batch-size", type=_positive, default=1024)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--embed-dim", type=_positive, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu")
    t.add_argument("--out", required=True, help="run directory to write")

    e = sub.add_parser("eval", help="recompute metrics of a run from its predictions")
    e.add_argument("--run", required=True)

    lb = sub.add_parser("leaderboard", help="table of several runs")
    lb.add_argument(
        "--runs", nargs="+", required=True, help="run directories (or parents of run directories)"
    )
    lb.add_argument("--out", default=None, help="write .md or .json")
    lb.add_argument("--sort", default="auc")

    b = sub.add_parser("bench", help="run every claim, write results/antm2c.json")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--output", default=None)
    b.add_argument("--workdir", default=None)
    return p


def _prepare(a: argparse.Namespace) -> int:
    from .pipeline import COMMUNITY_CUTOFFS, PrepareConfig, prepare
    from .schema import DeepFeatureTypes

    kw: dict[str, Any] = {}
    if a.numeric_deep is not None:
        kw["deep"] = DeepFeatureTypes(numeric=a.numeric_deep)
    cfg = PrepareConfig(
        cutoffs=a.cutoffs or COMMUNITY_CUTOFFS,
        on_malformed=a.on_malformed,
        max_malformed_fraction=a.max_malformed_fraction,
        entity_sep=a.entity_sep,
        max_tokens=a.max_tokens,
        block_size=a.block_size,
        row_group_rows=a.row_group_rows,
        overwrite=a.overwrite,
        **kw,
    )
    rep = prepare(a.input, a.out, cfg, progress_bar=not a.json)
    doc = {
        "out": str(rep.out_dir),
        "rows_read": rep.rows_read,
        "rows_written": rep.rows_written,
        "malformed": rep.malformed,
        "seconds": rep.seconds,
        "cpu_seconds": rep.cpu_seconds,
        "rows_per_s": rep.rows_per_second,
        "malformed_examples": rep.malformed_examples[:5],
    }
    if a.json:
        print(json.dumps(doc))
    else:
        print(
            f"prepared {rep.rows_written:,} of {rep.rows_read:,} rows into {rep.out_dir} in "
            f"{rep.seconds:.1f} s ({rep.rows_per_second:,.0f} rows/s); "
            f"malformed rows: {rep.malformed}"
        )
        for ex in rep.malformed_examples[:5]:
            print(f"  {ex['file']}:{ex['line']}: {ex['reason']}")
        if cfg.cutoffs == COMMUNITY_CUTOFFS:
            print("  split: community cutoffs 2023-08-03 / 2023-08-05 (unofficial)")
    return 0


def _task(a: argparse.Namespace) -> Any:
    from dataclasses import replace

    from .features import FeatureSpec
    from .tasks import cold_start, multi_scenario, multimodal, single_scenario

    spec = None
    if a.features:
        spec = FeatureSpec.preset(a.features)
    if a.task == "single":
        if a.scene is None:
            raise ValueError("--task single needs --scene K")
        task = single_scenario(a.data, a.scene, spec)
    elif a.task == "multi":
        task = multi_scenario(a.data, None, spec)
    elif a.task in ("cold_user", "cold_item"):
        task = cold_start(a.data, a.task.split("_")[1], spec)
    else:
        task = multimodal(a.data, image=a.image)
        if spec is not None:
            task.spec = replace(spec, image=a.image)
    task.spec = replace(task.spec, id_mode=a.id_mode, hash_buckets=a.hash_buckets)
    return task


def _save_run(out: Path, res: Any, args: dict[str, Any], model_state: Any = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from shared import atomic_write, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    p = res.predictions
    table = pa.table(
        {
            k: getattr(p, k)
            for k in ("row", "label", "prob", "scene", "user", "item", "cold_user", "cold_item")
        }
    )
    with atomic_write(out / "predictions.parquet", "wb") as f:
        pq.write_table(table, f)
    doc = {
        "summary": res.summary(),
        "metrics": res.metrics,
        "history": res.history,
        "config": res.config,
        "args": args,
    }
    atomic_write_text(out / "metrics.json", json.dumps(doc, indent=2, default=float) + "\n")
    if model_state is not None:
        with atomic_write(out / "model.pt", "wb") as f:
            torch.save(model_state, f)


def _train(a: argparse.Namespace) -> int:
    from .train import TrainConfig, run

    task = _task(a)
    cfg = TrainConfig(
        epochs=a.epochs,
        patience=a.patience,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        device=a.device,
    )
    res = run(task, a.model, cfg, model_kwargs={"embed_dim": a.embed_dim})
    _save_run(Path(a.out), res, {k: v for k, v in vars(a).items()})
    s = res.summary()
    print(
        f"{task.name}/{a.model}: test AUC {s['auc']:.4f}  logloss {s['logloss']:.4f}  "
        f"GAUC {s['gauc']:.4f}  cold-item AUC {s['cold_item_auc']:.4f}  "
        f"({s['seconds']:.1f} s) -> {a.out}"
    )
    return 0


def _eval(a: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from .metrics import Predictions, evaluate

    path = Path(a.run) / "predictions.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{a.run}: no predictions.parquet (run `antm2c train` first)")
    t = pq.read_table(path)
    pred = Predictions(**{c: t.column(c).to_numpy() for c in t.column_names})
    m = evaluate(pred)
    print(json.dumps(m, indent=2, default=float))
    return 0


def _leaderboard(a: argparse.Namespace) -> int:
    from .leaderboard import Leaderboard

    dirs: list[Path] = []
    for r in a.runs:
        p = Path(r)
        if (p / "metrics.json").is_file():
            dirs.append(p)
        elif p.is_dir():
            dirs += sorted(q.parent for q in p.glob("*/metrics.json"))
        else:
            raise FileNotFoundError(f"{p}: no such run directory")
    if not dirs:
        raise FileNotFoundError(f"no run directories (with metrics.json) under {a.runs}")
    lb = Leaderboard.from_runs(dirs)
    print(lb.to_markdown(a.sort), end="")
    if a.out:
        lb.save(a.out)
    return 0


def _generate(a: argparse.Namespace) -> int:
    from .synth import SynthConfig, generate

    cfg = SynthConfig(
        n_rows=a.rows,
        n_users=a.users,
        n_items=a.items,
        n_parts=a.parts,
        main_effects=a.main_effects,
        image_dim=a.image_dim,
        seed=a.seed,
    )
    gt = generate(a.out, cfg)
    print(
        f"wrote {cfg.n_rows:,} rows in {len(gt.parts)} part(s) to {gt.out_dir} "
        f"(truth: {gt.truth_path.name}; cutoffs {cfg.cutoffs[0]} / {cfg.cutoffs[1]})"
    )
    return 0


def _demo(a: argparse.Namespace) -> int:
    from shared import progress

    from .features import FeatureSpec
    from .leaderboard import Leaderboard
    from .metrics import auc
    from .pipeline import PrepareConfig, prepare
    from .synth import SynthConfig, generate
    from .tasks import audit_splits, multi_scenario, multimodal, single_scenario
    from .train import TrainConfig, run

    t0 = time.perf_counter()
    tmp = None
    if a.out is None:
        tmp = tempfile.mkdtemp(prefix="antm2c_demo_")
        out = Path(tmp)
    else:
        out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"antm2c demo -> {out}")
    steps = progress(total=10, desc="demo", log_every=1)
    gt = generate(
        out / "raw", SynthConfig(n_rows=a.rows, seed=a.seed, image_dim=8), progress_bar=False
    )
    steps.update(1)
    rep = prepare(gt.out_dir, out / "prepared", PrepareConfig(overwrite=True), progress_bar=False)
    audit = audit_splits(out / "prepared")
    steps.update(1)
    print(
        f"generate+prepare: {rep.rows_read:,} rows, {rep.malformed} malformed, "
        f"{rep.rows_per_second:,.0f} rows/s; leak-free split audit ok={audit['ok']} "
        f"(community cutoffs, unofficial)"
    )
    root = out / "prepared"
    truth = gt.probabilities()
    cfg = TrainConfig(epochs=a.epochs, seed=a.seed)
    spec = FeatureSpec.preset("tabular")
    lb = Leaderboard()
    runs = [
        ("multi", multi_scenario(root, None, spec), m)
        for m in ("lr", "dnn", "deepfm", "dcnv2", "sharedbottom", "star")
    ]
    runs.append(("single_s4", single_scenario(root, 4, spec), "deepfm"))
    runs.append(("multimodal", multimodal(root, base="id", image=str(gt.image_path)), "deepfm"))
    oracle = None
    for label, task, model in runs:
        res = run(task, model, cfg)
        row = res.summary()
        row["task"] = label
        lb.add(row, {k: v["auc"] for k, v in res.metrics["scene"].items()})
        if oracle is None:
            p = res.predictions
            oracle = auc(p.label, truth[p.row])
        steps.update(1)
    steps.close()
    print(
        f"\nLeaderboard (test split; oracle AUC with the true click probabilities: {oracle:.4f})\n"
    )
    print(lb.to_markdown())
    lb.save(out / "leaderboard.md")
    lb.save(out / "leaderboard.json")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; wrote {out / 'leaderboard.md'}")
    return 0


def _bench(a: argparse.Namespace) -> int:
    from shared import render_markdown

    from .bench import BenchConfig, run_bench

    path, claims = run_bench(BenchConfig(quick=a.quick), a.output, a.workdir)
    print(render_markdown(claims))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .pipeline import MalformedRowError
    from .schema import SchemaError
    from .tasks import LeakageError

    args = _parser().parse_args(argv)
    handlers = {
        "demo": _demo,
        "generate": _generate,
        "prepare": _prepare,
        "train": _train,
        "eval": _eval,
        "leaderboard": _leaderboard,
        "bench": _bench,
    }
    try:
        return handlers[args.cmd](args)
    except KeyboardInterrupt as e:  # SIGINT, or SIGTERM during prepare (PrepareInterrupted)
        why = str(e) or "interrupted"
        print(
            f"antm2c {args.cmd}: {why if 'interrupted' in why else 'interrupted'}; partial "
            "output removed, no manifest written (rerun to start over)"
            if args.cmd == "prepare"
            else f"antm2c {args.cmd}: interrupted",
            file=sys.stderr,
        )
        return 130
    except (
        SchemaError,
        MalformedRowError,
        LeakageError,
        OSError,  # missing files, existing outputs, unwritable paths
        ValueError,
    ) as e:
        print(f"antm2c {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
