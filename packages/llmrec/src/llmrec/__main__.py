"""``python -m llmrec {demo,prepare,train,eval,bench}``.

``train`` runs data-parallel under ``torchrun`` (one process per rank; gloo on CPU, nccl with
CUDA), e.g. ``torchrun --nproc-per-node 2 -m llmrec train --data D --out RUN``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from shared.cli import positive_float as _positive_float

__all__ = ["main"]


def _positive(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def _parser() -> argparse.ArgumentParser:
    from .backbones import BACKBONES

    p = argparse.ArgumentParser(
        prog="python -m llmrec",
        description="LLM-Rec: domain-agnostic sequential recommendation with one language model "
        "(Tang et al., arXiv 2310.14304).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="synthetic data -> LLM-Rec and SASRec -> metrics (~2 min)")
    d.add_argument("--users", type=_positive, default=800)
    d.add_argument("--epochs", type=_positive, default=1)
    d.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("prepare", help="load raw data, clean, k-core, write a prepared data set")
    r.add_argument(
        "--source",
        required=True,
        choices=("synthetic", "amazon2018", "amazon2023", "recbole", "parquet"),
    )
    r.add_argument("--out", required=True)
    r.add_argument(
        "--domain",
        nargs=3,
        action="append",
        metavar=("NAME", "INTERACTIONS", "META"),
        help="amazon2018/amazon2023: one category (repeat for several domains)",
    )
    r.add_argument(
        "--recbole",
        nargs=2,
        action="append",
        metavar=("DIR", "NAME"),
        help="recbole: atomic files DIR/NAME.inter and DIR/NAME.item (repeatable)",
    )
    r.add_argument("--parquet", nargs=2, metavar=("INTERACTIONS", "ITEMS"))
    r.add_argument("--parquet-domain", default=None, help="domain when the files have none")
    r.add_argument("--users", type=_positive, default=2500, help="synthetic: number of users")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--kcore", type=_positive, default=5)
    r.add_argument("--missing-title", choices=("drop", "error", "placeholder"), default="drop")

    t = sub.add_parser("train", help="train LLM-Rec on a prepared data set (torchrun for DDP)")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--backbone", default="tiny-decoder", help=f"{BACKBONES} or a model folder")
    t.add_argument("--kind", choices=("encoder", "decoder"), default=None)
    t.add_argument("--mix", choices=("user", "domain", "single"), default="user")
    t.add_argument("--single-domain", default=None, help="the domain for --mix single")
    t.add_argument("--zero-shot", nargs="*", default=[], help="domains held out of training")
    t.add_argument("--epochs", type=_positive, default=3)
    t.add_argument("--batch-size", type=_positive, default=64)
    t.add_argument("--lr", type=_positive_float, default=1e-3)
    t.add_argument("--negatives", type=_positive, default=10)
    t.add_argument("--in-batch-negatives", action="store_true")
    t.add_argument("--history-len", type=_positive, default=10)
    t.add_argument("--pooling", choices=("auto", "cls", "last", "mean"), default="auto")
    t.add_argument("--padding-side", choices=("right", "left"), default="right")
    t.add_argument("--eval-every", type=int, default=0)
    t.add_argument("--patience", type=_positive, default=10)
    t.add_argument("--max-steps", type=_positive, default=None)
    t.add_argument("--valid-fraction", type=_positive_float, default=0.1)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--device", default="cpu")
    t.add_argument("--seed", type=int, default=0)

    e = sub.add_parser("eval", help="evaluate a run: sampled and/or full ranking, per group")
    e.add_argument("--run", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", choices=("test", "valid"), default="test")
    e.add_argument("--protocol", choices=("sampled", "full", "both"), default="both")
    e.add_argument("--negatives", type=_positive, default=1000)
    e.add_argument("--negatives-file", default=None, help="persisted negatives (made if absent)")
    e.add_argument("--scope", choices=("domain", "all"), default="domain")
    e.add_argument("--output", default=None, help="write the metrics as JSON")

    b = sub.add_parser("bench", help="run every claim, write results/llmrec.json")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--output", default=None)
    b.add_argument("--seed", type=int, default=0)
    return p


# --------------------------------------------------------------------------- prepare


def _prepare(a: argparse.Namespace) -> int:
    from .loaders import load_amazon2018, load_amazon2023, load_parquet, load_recbole
    from .preprocess import PrepConfig, prepare
    from .synthetic import generate, scaled_config

    if a.source == "synthetic":
        sources = [generate(scaled_config(a.users, a.seed))]
    elif a.source in ("amazon2018", "amazon2023"):
        if not a.domain:
            raise SystemExit(f"--source {a.source} needs --domain NAME INTERACTIONS META")
        load = load_amazon2018 if a.source == "amazon2018" else load_amazon2023
        sources = [load(inter, meta, name) for name, inter, meta in a.domain]
    elif a.source == "recbole":
        if not a.recbole:
            raise SystemExit("--source recbole needs --recbole DIR NAME")
        sources = [load_recbole(dr, name) for dr, name in a.recbole]
    else:
        if not a.parquet:
            raise SystemExit("--source parquet needs --parquet INTERACTIONS ITEMS")
        sources = [load_parquet(*a.parquet, domain=a.parquet_domain)]
    data = prepare(sources, PrepConfig(kcore=a.kcore, missing_title=a.missing_title))
    data.save(a.out)
    st = data.stats
    print(
        f"prepared {st['users']:,} users, {st['items']:,} items, {st['interactions']:,} "
        f"interactions in {len(data.domains)} domain(s) {data.domains} -> {a.out}"
    )
    return 0


# --------------------------------------------------------------------------- train / eval


def _train(a: argparse.Namespace) -> int:
    import torch

    from shared import atomic_write, atomic_write_text, init_distributed

    from .backbones import BackboneSpec
    from .experiment import make_setup, train_text_model
    from .model import ModelConfig
    from .preprocess import RecData
    from .train import TrainConfig

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        info = init_distributed(timeout_s=600)
        rank = info.rank
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // info.world_size))
    data = RecData.load(a.data)
    if a.mix == "single" and not a.single_domain:
        raise SystemExit("--mix single needs --single-domain NAME")
    if a.valid_fraction > 1:
        raise SystemExit("--valid-fraction must be in (0, 1]")
    out = Path(a.out)
    spec = BackboneSpec(a.backbone, kind=a.kind, seed=a.seed)
    mcfg = ModelConfig(pooling=a.pooling, padding_side=a.padding_side)
    tcfg = TrainConfig(
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        n_negatives=a.negatives,
        in_batch_negatives=a.in_batch_negatives,
        eval_every=a.eval_every,
        patience=a.patience,
        max_steps=a.max_steps,
        seed=a.seed,
        device=a.device,
        checkpoint_dir=str(out / "checkpoints"),
        resume=a.resume,
    )
    setup = make_setup(
        data,
        zero_shot=tuple(a.zero_shot),
        history_len=a.history_len,
        valid_fraction=a.valid_fraction,
    )
    model, res = train_text_model(
        setup,
        spec,
        tcfg,
        mix=a.mix,
        domain=a.single_domain if a.mix == "single" else None,
        model_cfg=mcfg,
    )
    if rank == 0:
        from .backbones import Backbone

        Backbone(model.backbone, model.tokenizer, model.kind, spec).save(out / "backbone")
        with atomic_write(out / "model.pt") as f:
            torch.save(model.state_dict(), f)
        run = {
            "model_config": asdict(mcfg),
            "train_config": asdict(tcfg),
            "mix": a.mix,
            "single_domain": a.single_domain,
            "zero_shot": list(a.zero_shot),
            "history_len": a.history_len,
            "data_fingerprint": data.fingerprint(),
            "result": {k: v for k, v in asdict(res).items()},
        }
        atomic_write_text(out / "run.json", json.dumps(run, indent=2, default=str) + "\n")
        print(
            f"trained {res.steps} steps in {res.seconds:.1f} s; best validation "
            f"{tcfg.select_metric} = {res.best_metric}; run saved to {out}"
        )
    if distributed:
        from shared import destroy_distributed

        destroy_distributed()
    return 0


def load_run(run: str | Path, data):
    """Rebuild the trained model of a run directory for ``data`` (fingerprints must match)."""
    import torch

    from .backbones import load_backbone
    from .model import LLMRec, ModelConfig
    from .schema import DataError

    r = Path(run)
    if not (r / "run.json").exists() or not (r / "model.pt").exists():
        raise DataError(f"{r} is not a finished run (run.json / model.pt missing)")
    meta = json.loads((r / "run.json").read_text())
    if meta["data_fingerprint"] != data.fingerprint():
        raise DataError(f"{r} was trained on other data (fingerprint mismatch)")
    model = LLMRec(load_backbone(r / "backbone"), data.titles, ModelConfig(**meta["model_config"]))
    model.load_state_dict(torch.load(r / "model.pt", map_location="cpu"))
    return model.eval(), meta


def _eval(a: argparse.Namespace) -> int:
    import numpy as np

    from shared import atomic_write_text

    from .evaluate import evaluate, groups_for
    from .mixing import build_examples
    from .negatives import load_negatives, sample_eval_negatives, save_negatives
    from .preprocess import RecData

    data = RecData.load(a.data)
    model, meta = load_run(a.run, data)
    hl = meta["history_len"]
    mix = meta["mix"] if meta["mix"] != "single" else "domain"
    ex = build_examples(data, a.split, mix=mix, history_len=hl)
    mixed = build_examples(data, a.split, history_len=hl).hist
    groups = groups_for(data, ex, mixed_hist=mixed)
    for z in meta.get("zero_shot", []):
        groups[f"zero_shot={z}"] = data.item_domain[ex.targets] == data.domain_index(z)
    if meta["mix"] == "single":
        keep = data.item_domain[ex.targets] == data.domain_index(meta["single_domain"])
        ex, groups = ex.subset(keep), {k: v[keep] for k, v in groups.items()}
    negs = None
    if a.protocol in ("sampled", "both"):
        nf = Path(a.negatives_file) if a.negatives_file else None
        if nf is not None and nf.exists():
            negs = load_negatives(nf, data, ex.users, ex.targets)
        else:
            negs = sample_eval_negatives(data, ex.users, ex.targets, a.negatives)
            if nf is not None:
                save_negatives(nf, data, ex.users, ex.targets, negs, meta={"n": a.negatives})
    cache = model.item_vectors()
    report = {}
    for proto in ("sampled", "full") if a.protocol == "both" else (a.protocol,):
        res = evaluate(
            model,
            data,
            ex,
            protocol=proto,
            negatives=negs,
            scope=a.scope,
            groups=groups,
            item_vectors=cache,
        )
        report[proto] = res["groups"]
        what = f"1 + {a.negatives} negatives" if proto == "sampled" else a.scope
        print(f"== {proto} ({what})")
        print(f"{'group':<24}{'n':>7}{'R@1':>8}{'R@10':>8}{'N@10':>8}{'MRR':>8}")
        for name, m in res["groups"].items():
            print(
                f"{name:<24}{int(m['n']):>7}{m['recall@1']:>8.4f}{m['recall@10']:>8.4f}"
                f"{m['ndcg@10']:>8.4f}{m['mrr']:>8.4f}"
            )
    if a.output:
        atomic_write_text(a.output, json.dumps(report, indent=2, default=float) + "\n")
    del np
    return 0


# --------------------------------------------------------------------------- demo / bench


def _demo(a: argparse.Namespace) -> int:
    import torch

    from .backbones import BackboneSpec
    from .evaluate import evaluate
    from .experiment import make_setup, train_text_model
    from .preprocess import PrepConfig, prepare
    from .sasrec import SASRecConfig, train_sasrec
    from .synthetic import ZERO_SHOT_DOMAIN, generate, scaled_config
    from .train import TrainConfig

    t0 = time.perf_counter()
    torch.manual_seed(a.seed)
    synth = scaled_config(a.users, a.seed)
    data = prepare([generate(synth)], PrepConfig(kcore=5))
    print(
        f"synthetic data: {data.n_users} users, {data.n_items} items, domains {data.domains} "
        f"({ZERO_SHOT_DOMAIN!r} is zero-shot, written with synonyms)"
    )
    setup = make_setup(data, zero_shot=(ZERO_SHOT_DOMAIN,))
    tcfg = TrainConfig(epochs=a.epochs, batch_size=64, lr=3e-3, seed=a.seed)
    torch.set_num_threads(1)
    model, fit = train_text_model(setup, BackboneSpec("tiny-decoder", seed=a.seed), tcfg)
    print(f"LLM-Rec (tiny Llama, user mix): {fit.steps} steps in {fit.seconds:.1f} s")
    # the synthetic sequences have at most 14 events: 20 positions lose nothing
    longest = max(len(x) for x in data.seqs)
    sas = train_sasrec(
        data, SASRecConfig(epochs=30, max_len=min(50, max(20, longest)), seed=a.seed)
    )
    trained = setup.groups["trained_domains"]
    groups = {
        k: (v if k in ("zero_shot", "trained_domains") else v & trained)
        for k, v in setup.groups.items()
    }
    rows = []
    for name, m in (("LLM-Rec", model), ("SASRec", sas)):
        res = evaluate(m, data, setup.test, negatives=setup.test_negatives, groups=groups)
        rows.append((name, res["groups"]))
    keys = ("trained_domains", "cold", "warm", "same", "mix", "diff", "zero_shot")
    print(
        "\nRecall@10 of the test users (1,000 sampled same-domain negatives, or all other items "
        "of a smaller domain); cold/warm/same/mix/diff over the trained domains"
    )
    print(f"{'model':<10}" + "".join(f"{k:>17}" for k in keys))
    for name, tab in rows:
        print(
            f"{name:<10}"
            + "".join(f"{tab[k]['recall@10']:>17.3f}" if k in tab else f"{'-':>17}" for k in keys)
        )
    print(
        "n         "
        + "".join(f"{int(rows[0][1][k]['n']) if k in rows[0][1] else 0:>17}" for k in keys)
    )
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    return 0


def _bench(a: argparse.Namespace) -> int:
    from shared import render_markdown

    from .bench import run_bench

    claims = run_bench(quick=a.quick, output=a.output, seed=a.seed)
    print(render_markdown(claims))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .schema import DataError

    a = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return {
            "demo": _demo,
            "prepare": _prepare,
            "train": _train,
            "eval": _eval,
            "bench": _bench,
        }[a.cmd](a)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
