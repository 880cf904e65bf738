"""``python -m bahe {demo,build-store,train,eval,bench}``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from shared.cli import nonneg_int as _nonneg_int
from shared.cli import positive_float as _positive_float
from shared.cli import positive_int as _positive_int

# ---------------------------------------------------------------------------- data loading


def load_data(spec: str, *, split: str | None, max_behaviors: int, catalog=None, sep: str = ","):
    """``synthetic`` | an AntM2C part or folder | a ``.parquet``/``.jsonl`` simple-format file."""
    from bahe.data import DataError, SyntheticConfig, antm2c_data, make_synthetic, read_simple

    if spec == "synthetic" or spec.startswith("synthetic:"):
        seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        tr, te, _ = make_synthetic(SyntheticConfig(seed=seed, behaviors_per_family=max_behaviors))
        return te if split == "test" else tr
    p = Path(spec)
    if not p.exists():
        raise DataError(f"--data {spec}: no such file or directory (or use 'synthetic')")
    if p.is_file() and p.suffix in (".parquet", ".jsonl", ".json"):
        return read_simple(p, max_behaviors=max_behaviors, catalog=catalog)
    return antm2c_data(p, split=split, max_behaviors=max_behaviors, entity_sep=sep, catalog=catalog)


def _lm_for(args: argparse.Namespace, texts: list[str], store: Path | None = None):
    from bahe.lm import SplitLM, load_lm
    from bahe.pretrain import pretrain_lm

    spec = args.model
    saved = store / "lm" if store is not None else None
    if saved is not None and (saved / "bahe_model.json").is_file() and spec.startswith("tiny-"):
        spec = str(saved)  # the very weights the store was built with
    model, tok = load_lm(
        spec,
        tokenizer_texts=texts,
        layers=args.layers,
        hidden=args.hidden,
        heads=4,
        max_positions=args.max_positions,
    )
    if spec.startswith("tiny-") and args.pretrain_steps:
        pretrain_lm(model, tok, texts, steps=args.pretrain_steps)
    lm = SplitLM(
        model,
        tok,
        args.num_lower,
        pooling=args.pooling,
        max_behavior_tokens=args.max_behavior_tokens,
    )
    return lm, spec


def _init_dist() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from shared import init_distributed

        info = init_distributed()
        return info.rank, info.world_size
    return 0, 1


# ---------------------------------------------------------------------------- commands


def cmd_build_store(a: argparse.Namespace) -> int:
    from bahe.lm import save_lm
    from bahe.store import build_store

    rank, world = _init_dist()
    data = load_data(a.data, split=None, max_behaviors=a.max_behaviors, sep=a.entity_sep)
    texts = data.texts()
    out = Path(a.out)
    lm, spec = _lm_for(a, texts, out if a.refresh else None)
    if spec.startswith("tiny-") and rank == 0:
        save_lm(lm.full, lm.tokenizer, out / "lm")
    t0 = time.perf_counter()
    store = build_store(
        data.catalog if not a.refresh else texts,
        lm,
        out,
        dtype=a.dtype,
        batch_size=a.batch_size,
        refresh=a.refresh,
        overwrite=a.overwrite,
        show_progress=True,
    )
    if rank == 0:
        st = store.manifest["stats"]
        print(
            f"store {out}: version {store.version}, {len(store)} behaviours x {store.dim} "
            f"({store.manifest['dtype']}), {st['encoded']} encoded now by {world} process(es) in "
            f"{time.perf_counter() - t0:.1f}s; dedup ratio {data.stats()['dedup_ratio']:.1f} "
            f"(behaviour occurrences per unique behaviour)"
        )
    return 0


def _model_for(a: argparse.Namespace, lm, store, families, id_features=()):
    from bahe.baseline import NaiveConfig, NaiveCTR
    from bahe.model import BAHECTR, BAHEConfig

    if a.baseline:
        cfg = NaiveConfig(
            families=tuple(families),
            max_behaviors=a.max_behaviors,
            train_lower=a.baseline == "naive_full",
            id_features=tuple(id_features),
        )
        return NaiveCTR(lm, cfg)
    return BAHECTR(
        lm,
        store,
        BAHEConfig(
            families=tuple(families), max_behaviors=a.max_behaviors, id_features=tuple(id_features)
        ),
    )


def cmd_train(a: argparse.Namespace) -> int:
    from bahe.store import BehaviorStore
    from bahe.train import TrainConfig, save_checkpoint, train
    from shared import atomic_write_text

    rank, world = _init_dist()
    store_dir = Path(a.store)
    data = load_data(a.data, split="train", max_behaviors=a.max_behaviors, sep=a.entity_sep)
    lm, spec = _lm_for(a, data.texts(), store_dir)
    store = BehaviorStore.open(store_dir, expect=lm.identity())
    model = _model_for(a, lm, store, data.families)
    cfg = TrainConfig(epochs=a.epochs, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
    res = train(model, data, cfg, show_progress=True)
    if rank == 0:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(model, out / "model.pt", meta={"steps": res.steps})
        run = {k: v for k, v in vars(a).items() if k != "func"}
        run.update({"model_spec": spec, "families": list(data.families), "world_size": world})
        atomic_write_text(out / "run.json", json.dumps(run, indent=2) + "\n")
        print(
            f"trained {model.kind} for {res.steps} steps on {len(data)} rows with {world} "
            f"process(es) in {res.seconds:.1f}s; final loss {sum(res.losses[-20:]) / len(res.losses[-20:]):.4f}; "
            f"checkpoint {out / 'model.pt'}"
        )
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from bahe.store import BehaviorStore
    from bahe.train import evaluate, load_checkpoint

    run_dir = Path(a.run)
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(
            f"error: {run_dir} is not a training run (run.json unreadable: {e})"
        ) from None
    ns = argparse.Namespace(**{**run, "data": a.data or run["data"]})
    ns.model = run["model_spec"]
    store_dir = Path(run["store"])
    data = load_data(ns.data, split=a.split, max_behaviors=ns.max_behaviors, sep=ns.entity_sep)
    lm, _ = _lm_for(ns, data.texts(), store_dir)
    store = BehaviorStore.open(store_dir, expect=lm.identity())
    model = _model_for(ns, lm, store, run["families"])
    load_checkpoint(model, run_dir / "model.pt")
    m = evaluate(model, data)
    print(json.dumps(m))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from bahe.bench import run_demo

    return run_demo(steps=a.steps, behaviors=a.behaviors)


def cmd_bench(a: argparse.Namespace) -> int:
    from bahe.bench import run_bench

    return run_bench(quick=a.quick, output=a.output)


def _lm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="tiny-bert",
        help="tiny-bert|tiny-llama|tiny-qwen2|tiny-gpt2|minilm|smollm2|<HF model dir>",
    )
    p.add_argument("--num-lower", type=_positive_int, default=2, help="layers below the split")
    p.add_argument("--pooling", choices=("mean", "last", "cls"), default=None)
    p.add_argument("--layers", type=_positive_int, default=4, help="tiny models: layers")
    p.add_argument("--hidden", type=_positive_int, default=64, help="tiny models: width")
    p.add_argument("--max-positions", type=_positive_int, default=2048)
    p.add_argument("--max-behavior-tokens", type=_positive_int, default=16)
    p.add_argument(
        "--pretrain-steps",
        type=_nonneg_int,
        default=0,
        help="tiny models: masked/next-token pre-training steps on the behaviour texts (default 0: "
        "a few hundred steps collapsed the pooled vectors of the tiny BERT; see the README)",
    )
    p.add_argument("--max-behaviors", type=_positive_int, default=16)
    p.add_argument("--entity-sep", default=",", help="AntM2C entity separator")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bahe", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("demo", help="synthetic data -> store -> BAHE vs naive, ~2 min")
    p.add_argument("--steps", type=_positive_int, default=200)
    p.add_argument("--behaviors", type=_positive_int, default=4, help="behaviours per family")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("build-store", help="encode unique behaviours into a store (torchrun-able)")
    p.add_argument("--data", required=True, help="synthetic | AntM2C part/folder | .parquet/.jsonl")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--refresh", action="store_true", help="add only new behaviours (new version)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    _lm_args(p)
    p.set_defaults(func=cmd_build_store)

    p = sub.add_parser("train", help="train BAHE (or a naive baseline) on a store (torchrun-able)")
    p.add_argument("--data", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--baseline", choices=("naive_full", "naive_frozen"), default=None)
    p.add_argument("--epochs", type=_positive_int, default=1)
    p.add_argument("--steps", type=_positive_int, default=None)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--seed", type=_nonneg_int, default=0)
    _lm_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="AUC/logloss of a trained run")
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None, help="default: the run's data")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="claims -> results JSON")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--output", default=None)
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    from bahe.data import DataError
    from bahe.store import StoreError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DataError, StoreError, ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
