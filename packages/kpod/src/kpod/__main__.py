"""``python -m kpod {demo,prepare,weights,difficulty,schedule,distill,eval,run,view,bench}``.

The stage commands work on one output folder (``--out``). ``prepare`` stores the run
configuration in ``<out>/config.json``; later commands read it back, and any flag given again
overrides the stored value (a stage run under a changed configuration is refused unless
``--force``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kpod.schema import KPODDataError
from shared.cli import positive_int as _pos_int


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {v}")
    return v


# flag -> (config path, type)
_FLAGS: dict[str, tuple[str, Any]] = {
    "data": ("data", str),
    "train_path": ("train_path", str),
    "test_path": ("test_path", str),
    "n_train": ("n_train", _pos_int),
    "n_test": ("n_test", _pos_int),
    "student": ("student", str),
    "device": ("device", str),
    "weight_steps": ("weighting.steps", _pos_int),
    "alpha": ("weighting.alpha", _nonneg_float),
    "alpha_scale": ("weighting.alpha_scale", str),
    "stages": ("schedule.stages", _pos_int),
    "beta": ("schedule.beta", _nonneg_float),
    "p": ("schedule.p", float),
    "c0_fraction": ("schedule.c0_fraction", _nonneg_float),
    "delta_s": ("schedule.delta_s", _pos_int),
    "selector": ("schedule.selector", str),
    "clusters": ("n_clusters", _pos_int),
    "embedding": ("embedding", str),
    "epochs": ("distill.epochs", _pos_int),
    "lr": ("distill.lr", _nonneg_float),
    "batch_size": ("distill.batch_size", _pos_int),
    "lora_rank": ("distill.lora_rank", _pos_int),
    "seed": ("distill.seed", int),
    "max_new_tokens": ("max_new_tokens", _pos_int),
}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run configuration (stored in <out>/config.json)")
    for flag, (_, typ) in _FLAGS.items():
        g.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ, default=None)


def _config(a: argparse.Namespace):
    from kpod.pipeline import RunConfig

    path = Path(a.out) / "config.json"
    if path.is_file():
        try:
            cfg = RunConfig.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise KPODDataError(f"{path}: not a valid run configuration ({e})") from None
    else:
        cfg = RunConfig()
    d = cfg.to_dict()
    for flag, (dotted, _) in _FLAGS.items():
        v = getattr(a, flag, None)
        if v is None:
            continue
        if "." in dotted:
            head, key = dotted.split(".")
            d[head][key] = v
        else:
            d[dotted] = v
    cfg = RunConfig.from_dict(d)
    from kpod.artifacts import write_json

    write_json(path, cfg.to_dict())
    return cfg


def _pipeline(a: argparse.Namespace):
    from kpod.pipeline import Pipeline

    return Pipeline(_config(a), a.out, force=a.force, show_progress=True)


def _demo_config(quick: bool = True):
    """The quick benchmark's run configuration (one seed per method in the demo)."""
    from kpod.bench import bench_config

    return bench_config(quick)[0]


def cmd_demo(a: argparse.Namespace) -> int:
    import tempfile

    import numpy as np

    from kpod.artifacts import read_json, read_parquet
    from kpod.pipeline import Pipeline
    from kpod.view import keypoint_html

    t0 = time.perf_counter()
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="kpod-demo-"))
    cfg = _demo_config()
    print(
        f"kpod demo: synthetic keypoint arithmetic ({cfg.synthetic.n_train} train / {cfg.synthetic.n_test} test), tiny Llama student, artifacts in {out}"
    )
    p = Pipeline(cfg, out, show_progress=True)
    res = p.run(("answer_only", "cot", "kpod"))
    w = read_json(out / "weights.json")
    d = read_json(out / "difficulty.done.json")
    s = read_json(out / "schedule.json")
    print(
        f"token weighting: keypoint-vs-filler AUROC {w['auroc']:.3f}; keep ratio {w['history']['keep']:.2f}; "
        f"charge per kept token {w['calibration'].get('alpha_per_token', float('nan')):.3f} nats"
    )
    print(
        f"step difficulty vs planted hardness (Spearman): weighted {d['spearman_weighted']:.3f}, unweighted {d['spearman_uniform']:.3f}"
    )
    print(
        "schedule: "
        + ", ".join(
            f"t={r['stage']}: {r['selected']} selected, H={r['H']:.0f}/D={r['D']:.0f}"
            for r in s["stats"]
        )
    )
    for m, r in res.items():
        print(f"{m:<12} test accuracy {r['accuracy']:.3f} (n={r['n']})")
    tw, _ = read_parquet(out / "token_weights.parquet")
    ex = {e.id: e for e in p.examples("train")}
    rows = tw.head(8).to_dict("records")
    html = keypoint_html(
        [ex[r["id"]].rationale for r in rows],
        [np.stack([r["start"], r["end"]], 1) for r in rows],
        [np.asarray(r["weight"]) for r in rows],
        titles=[r["id"] for r in rows],
    )
    (out / "keypoints.html").write_text(html)
    print(f"keypoint view: {out / 'keypoints.html'}; total {time.perf_counter() - t0:.0f}s")
    return 0


def cmd_stage(a: argparse.Namespace) -> int:
    p = _pipeline(a)
    if a.cmd == "prepare":
        p.prepare()
        print(
            f"prepared {len(p.examples('train'))} train / {len(p.examples('test'))} test examples in {a.out}"
        )
    elif a.cmd == "weights":
        p.weights()
        print(json.dumps(json.loads((Path(a.out) / "weights.done.json").read_text())))
    elif a.cmd == "difficulty":
        p.difficulty()
        print(json.dumps(json.loads((Path(a.out) / "difficulty.done.json").read_text())))
    elif a.cmd == "schedule":
        p.schedule()
        print((Path(a.out) / "schedule.json").read_text())
    elif a.cmd == "distill":
        d = dataclasses.replace(p.cfg.distill, method=a.method)
        print(f"student saved in {p.distill(a.name or a.method, d)}")
    elif a.cmd == "eval":
        print(json.dumps(p.evaluate(a.name, a.method)))
    elif a.cmd == "run":
        methods = tuple(m.strip() for m in a.methods.split(",") if m.strip())
        print(json.dumps(p.run(methods), indent=2))
    return 0


def cmd_view(a: argparse.Namespace) -> int:
    import numpy as np

    from kpod.artifacts import read_parquet
    from kpod.pipeline import Pipeline, RunConfig
    from kpod.view import keypoint_html

    p = Pipeline(RunConfig(), a.out)
    tw, _ = read_parquet(Path(a.out) / "token_weights.parquet")
    ex = {e.id: e for e in p.examples("train")}
    rows = tw.head(a.n).to_dict("records")
    html = keypoint_html(
        [ex[r["id"]].rationale for r in rows],
        [np.stack([r["start"], r["end"]], 1) for r in rows],
        [np.asarray(r["weight"]) for r in rows],
        titles=[r["id"] for r in rows],
    )
    dest = Path(a.html or Path(a.out) / "keypoints.html")
    from shared import atomic_write_text

    atomic_write_text(dest, html)
    print(f"wrote {dest}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from kpod.bench import run_bench, run_smollm2_bench
    from shared.claims import render_markdown

    if a.smollm2:
        claims = run_smollm2_bench(a.output, n_train=a.n_train, n_test=a.n_test, show_progress=True)
        print(render_markdown(claims))
        return 0

    claims = run_bench(a.quick, a.output, show_progress=True)
    print(render_markdown(claims))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kpod", description="KPOD: keypoint-based progressive CoT distillation"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("demo", help="the whole method on the embedded synthetic task (~2 min)")
    p.add_argument("--out", default=None, help="artifact folder (default: a temporary one)")
    p.set_defaults(fn=cmd_demo)
    for name, hlp in [("prepare", "load data, train the tokenizer, pre-train the tiny student"),
                      ("weights", "train the token-weighting module (Eq. 7), export weights"),
                      ("difficulty", "step difficulty under the pre-distillation student (Eq. 8)"),
                      ("schedule", "progressive schedule (Eqs. 9-13)"),
                      ("distill", "distil a student with one method"),
                      ("eval", "greedy evaluation of a distilled student"),
                      ("run", "every stage, then distil and evaluate each method")]:  # fmt: skip
        sp = sub.add_parser(name, help=hlp)
        sp.add_argument("--out", required=True, help="artifact folder")
        sp.add_argument("--force", action="store_true", help="redo the stage even if it is done")
        _add_config_flags(sp)
        if name in ("distill", "eval"):
            sp.add_argument(
                "--method", default="kpod", choices=["kpod", "cot", "answer_only", "step_by_step"]
            )
            sp.add_argument("--name", default=None, help="student name (default: the method)")
        if name == "run":
            sp.add_argument("--methods", default="answer_only,cot,kpod")
        sp.set_defaults(fn=cmd_stage)
    p = sub.add_parser("view", help="HTML keypoint view of the learned weights")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=_pos_int, default=10)
    p.add_argument("--html", default=None)
    p.set_defaults(fn=cmd_view)
    p = sub.add_parser("bench", help="the claims benchmark")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--output", default=None)
    p.add_argument(
        "--smollm2",
        action="store_true",
        help="the slow real-model benchmark (GSM8K into SmolLM2-135M)",
    )
    p.add_argument("--n-train", type=_pos_int, default=48)
    p.add_argument("--n-test", type=_pos_int, default=24)
    p.set_defaults(fn=cmd_bench)
    a = ap.parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)  # tiny models: one thread avoids oversubscribing shared cores
    if a.cmd == "eval" and a.name is None:
        a.name = a.method
    try:
        return a.fn(a)
    except (KPODDataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
