"""Algorithm 1 end to end, one resumable stage at a time.

Stages and their artifacts (in ``out_dir``):

=============  ==================================================================================
prepare        ``examples.parquet`` (train + test), ``student_init/`` (tiny default: tokenizer
               trained locally and the pre-trained tiny student)
weights        ``weighter.pt`` (the weighting module), ``token_weights.parquet`` (per rationale
               token: character span, weight w, role label if known), ``weights.json``
difficulty     ``step_difficulty.parquet`` (Eq. 8, weighted and unweighted, planted hardness)
schedule       ``clusters.parquet``, ``schedule.parquet`` (stage, id, input steps), ``schedule.json``
distill        ``students/<name>/`` (model, tokenizer, ``train_log.json``) and, while training,
               ``students/<name>.ckpt/`` (per-epoch checkpoint with the optimiser state)
eval           ``eval_<name>.json``, ``predictions_<name>.parquet``
=============  ==================================================================================

Each stage ends with a ``<stage>.done.json`` marker holding its configuration hash
(:mod:`kpod.artifacts`): a rerun resumes after the last finished stage, and a distillation killed
mid-run resumes from its last finished epoch with the same result as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from kpod.artifacts import (
    config_hash,
    mark_done,
    read_json,
    read_parquet,
    save_model_dir,
    stage_done,
    write_json,
    write_parquet,
)
from kpod.clustering import embed_questions, kmeans
from kpod.difficulty import spearman, step_difficulty, token_nll
from kpod.distill import DistillConfig, DistillTrainer, align_weights, method_template
from kpod.encoding import Template, encode_all
from kpod.evaluation import evaluate
from kpod.loaders import load_dataset
from kpod.schedule import Schedule, ScheduleConfig, build_schedule
from kpod.schema import CoTExample, KPODDataError
from kpod.student import TinyStudentConfig, build_tokenizer, tiny_student
from kpod.synthetic import SyntheticConfig, make_synthetic, synthetic_corpus
from kpod.weighting import TokenWeighter, WeightingConfig, fit_weighting, token_weights

__all__ = ["Pipeline", "RunConfig", "auroc"]

log = logging.getLogger(__name__)
DATA = ("synthetic", "gsm8k", "svamp", "asdiv", "csqa", "mcckd", "jsonl")


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        raise ValueError("AUROC needs both positive and negative labels")
    ranks = pd.Series(s).rank().to_numpy()
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


@dataclass(frozen=True)
class RunConfig:
    """Everything a KPOD run depends on (each stage hashes the part it uses)."""

    data: str = "synthetic"
    train_path: str | None = None
    test_path: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    student: str = "tiny"  # "tiny", "smollm2" or a Hugging Face model folder
    tiny: TinyStudentConfig = field(default_factory=TinyStudentConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    difficulty_normalize: str = "softmax"
    difficulty_temperature: float = 1.0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    n_clusters: int = 5
    embedding: str = "tfidf"
    glove_path: str | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    max_new_tokens: int = 128
    eval_batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.data not in DATA:
            raise ValueError(f"data must be one of {DATA}, got {self.data!r}")
        if self.data != "synthetic" and not self.train_path:
            raise ValueError(f"data={self.data!r} needs train_path")
        if self.n_train is not None and self.n_train < 1:
            raise ValueError("n_train must be >= 1")
        if self.n_test is not None and self.n_test < 0:
            raise ValueError("n_test must be >= 0")
        if self.n_clusters < 1 or self.max_new_tokens < 1 or self.eval_batch_size < 1:
            raise ValueError("n_clusters, max_new_tokens, eval_batch_size must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **kw: Any) -> RunConfig:
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        nested = {"synthetic": SyntheticConfig, "tiny": TinyStudentConfig, "weighting": WeightingConfig,
                  "schedule": ScheduleConfig, "distill": DistillConfig}  # fmt: skip
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown run config keys {sorted(unknown)}")
        kw = {}
        for k, v in d.items():
            if k in nested and isinstance(v, dict):
                sub = nested[k]
                bad = set(v) - {f.name for f in dataclasses.fields(sub)}
                if bad:
                    raise ValueError(f"unknown keys {sorted(bad)} in {k!r}")
                v = sub(**v)
            kw[k] = v
        return cls(**kw)


class Pipeline:
    """The stages of Alg. 1 over one output folder (see the module docstring)."""

    def __init__(
        self,
        cfg: RunConfig,
        out_dir: str | Path,
        *,
        force: bool = False,
        show_progress: bool = False,
    ):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.force = force
        self.show = show_progress
        self._student: tuple[Any, Any] | None = None

    # ---------------------------------------------------------------- hashes
    def _h(self, stage: str) -> str:
        c = self.cfg
        base = {"data": c.data, "train": c.train_path, "test": c.test_path, "n_train": c.n_train,
                "n_test": c.n_test, "syn": asdict(c.synthetic), "student": c.student, "tiny": asdict(c.tiny)}  # fmt: skip
        if stage == "prepare":
            return config_hash(base)
        base["weighting"] = asdict(c.weighting)
        if stage == "weights":
            return config_hash(base)
        base["difficulty"] = [c.difficulty_normalize, c.difficulty_temperature]
        if stage == "difficulty":
            return config_hash(base)
        base["schedule"] = [asdict(c.schedule), c.n_clusters, c.embedding, c.glove_path]
        return config_hash(base)

    # ---------------------------------------------------------------- prepare
    def _load_examples(self) -> tuple[list[CoTExample], list[CoTExample]]:
        c = self.cfg
        if c.data == "synthetic":
            train, test = make_synthetic(c.synthetic)
        else:
            train = load_dataset(c.data, c.train_path, split="train")
            test = load_dataset(c.data, c.test_path, split="test") if c.test_path else []
        train = train[: c.n_train] if c.n_train else train
        test = test[: c.n_test] if c.n_test is not None else test
        return train, test

    def prepare(self) -> None:
        h = self._h("prepare")
        if stage_done(self.out, "prepare", h, force=self.force):
            return
        train, test = self._load_examples()
        rows = [e.to_row() for e in train + test]
        write_parquet(self.out / "examples.parquet", pd.DataFrame(rows))
        if self.cfg.student == "tiny":
            t = Template()
            texts = [t.prompt(e) + e.rationale + t.answer.format(answer=e.answer) for e in train]
            extra = ["[label] [rationale]"] + (
                synthetic_corpus(2000, self.cfg.tiny.seed, self.cfg.synthetic.max_value)
                if self.cfg.data == "synthetic"
                else []
            )
            tok = build_tokenizer(texts + extra)
            corpus = (
                synthetic_corpus(2000, self.cfg.tiny.seed, self.cfg.synthetic.max_value)
                if self.cfg.data == "synthetic"
                else [e.rationale for e in train]
            )
            model = tiny_student(
                tok, self.cfg.tiny, corpus, device=self.cfg.device, show_progress=self.show
            )
            save_model_dir(self.out / "student_init", model.cpu(), tok)
        mark_done(self.out, "prepare", h, {"n_train": len(train), "n_test": len(test)})

    def examples(self, split: str) -> list[CoTExample]:
        df, _ = read_parquet(self.out / "examples.parquet")
        return [CoTExample.from_row(r) for r in df.to_dict("records") if r["split"] == split]

    def load_student(self) -> tuple[Any, Any]:
        """A fresh copy of the pre-distillation student and its tokenizer."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        s = self.cfg.student
        if s == "tiny":
            path = self.out / "student_init"
            if not path.is_dir():
                raise KPODDataError(f"{path}: missing (run the prepare stage first)")
            return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(
                path
            )
        if s == "smollm2":
            from shared.lm import load_smollm2

            return load_smollm2()
        return AutoModelForCausalLM.from_pretrained(s).eval(), AutoTokenizer.from_pretrained(s)

    # ---------------------------------------------------------------- weights
    def weights(self) -> None:
        h = self._h("weights")
        if stage_done(self.out, "weights", h, force=self.force):
            return
        model, tok = self.load_student()
        train = self.examples("train")
        enc = encode_all(train, tok)
        wcfg = dataclasses.replace(self.cfg.weighting, device=self.cfg.device)
        module, hist = fit_weighting(enc, model, tok, wcfg, show_progress=self.show)
        ws = token_weights(module, enc, pad_id=tok.pad_token_id or 0)
        rows, y, s = [], [], []
        for e, w in zip(enc, ws, strict=True):
            offs = e.rationale_offsets()
            roles = e.roles[e.rationale_tokens] if e.roles is not None else np.full(len(w), -1)
            rows.append({"id": e.id, "start": offs[:, 0].tolist(), "end": offs[:, 1].tolist(),
                         "weight": w.tolist(), "role": roles.tolist()})  # fmt: skip
            y += list(roles[roles >= 0])
            s += list(w[roles >= 0])
        from shared.lm import tokenizer_fingerprint

        write_parquet(
            self.out / "token_weights.parquet",
            pd.DataFrame(rows),
            {"tokenizer": tokenizer_fingerprint(tok)},
        )
        torch.save(
            {k: v for k, v in module.state_dict().items() if not k.startswith("predictor.")},
            self.out / "weighter.pt.tmp",
        )
        (self.out / "weighter.pt.tmp").replace(self.out / "weighter.pt")
        info = {
            "history": hist[-1] if hist else {},
            "auroc": auroc(s, y) if len(set(y)) == 2 else None,
            "calibration": module.calibration,
        }
        write_json(self.out / "weights.json", info | {"curve": hist[:: max(1, len(hist) // 50)]})
        mark_done(self.out, "weights", h, {"auroc": info["auroc"]})

    def load_weights(
        self, tokenizer: Any, examples: list[CoTExample], template: Template | None = None
    ) -> dict[str, np.ndarray]:
        """Stored weights mapped onto ``tokenizer``'s encoding of ``examples`` (by offsets)."""
        df, _ = read_parquet(self.out / "token_weights.parquet")
        by_id = {r["id"]: r for r in df.to_dict("records")}
        out = {}
        for e in encode_all(examples, tokenizer, template):
            if e.id not in by_id:
                raise KPODDataError(f"no token weights stored for example {e.id}")
            r = by_id[e.id]
            offs = np.stack([np.asarray(r["start"]), np.asarray(r["end"])], 1)
            out[e.id] = align_weights(e, offs, np.asarray(r["weight"], np.float32))
        return out

    # ---------------------------------------------------------------- difficulty
    def difficulty(self) -> None:
        h = self._h("difficulty")
        if stage_done(self.out, "difficulty", h, force=self.force):
            return
        model, tok = self.load_student()
        model.to(self.cfg.device)
        train = self.examples("train")
        enc = encode_all(train, tok)
        w = self.load_weights(tok, train)
        ws = [w[e.id] for e in enc]
        nll = token_nll(model, enc, pad_id=tok.pad_token_id or 0, device=self.cfg.device)
        d_w = step_difficulty(
            model,
            enc,
            ws,
            normalize=self.cfg.difficulty_normalize,
            temperature=self.cfg.difficulty_temperature,
            nll=nll,
        )
        d_u = step_difficulty(model, enc, None, normalize="uniform", nll=nll)
        rows = []
        for ex, a, b in zip(train, d_w, d_u, strict=True):
            for k in range(len(a)):
                hard = ex.step_hardness[k] if len(ex.step_hardness) == len(a) else float("nan")
                rows.append(
                    {
                        "id": ex.id,
                        "step": k,
                        "difficulty": a[k],
                        "difficulty_uniform": b[k],
                        "hardness": hard,
                    }
                )
        df = pd.DataFrame(rows)
        write_parquet(self.out / "step_difficulty.parquet", df)
        info = {}
        if df["hardness"].notna().all():
            info = {"spearman_weighted": spearman(df["difficulty"], df["hardness"]),
                    "spearman_uniform": spearman(df["difficulty_uniform"], df["hardness"])}  # fmt: skip
        mark_done(self.out, "difficulty", h, info)

    def difficulties(self) -> list[np.ndarray]:
        df, _ = read_parquet(self.out / "step_difficulty.parquet")
        by = {
            k: g.sort_values("step")["difficulty"].to_numpy()
            for k, g in df.groupby("id", sort=False)
        }
        return [by[e.id] for e in self.examples("train")]

    # ---------------------------------------------------------------- schedule
    def schedule(self) -> None:
        h = self._h("schedule")
        if stage_done(self.out, "schedule", h, force=self.force):
            return
        train = self.examples("train")
        X = embed_questions(
            [e.question for e in train], self.cfg.embedding, glove_path=self.cfg.glove_path
        )
        clusters = kmeans(X, self.cfg.n_clusters, seed=0)
        write_parquet(
            self.out / "clusters.parquet",
            pd.DataFrame({"id": [e.id for e in train], "cluster": clusters}),
            {"embedding": self.cfg.embedding},
        )
        sch = build_schedule(self.difficulties(), clusters, self.cfg.schedule)
        rows = [{"stage": t, "id": e.id, "input_steps": int(sch.c[t, i]), "n_steps": int(sch.n_steps[i])}
                for t in range(sch.T + 1) for i, e in enumerate(train)]  # fmt: skip
        write_parquet(self.out / "schedule.parquet", pd.DataFrame(rows))
        write_json(
            self.out / "schedule.json",
            {"feasible": sch.feasible, "budget": asdict(sch.budget), "stats": sch.stats},
        )
        mark_done(self.out, "schedule", h)

    def load_schedule(self) -> Schedule:
        from kpod.schedule import DifficultyBudget

        df, _ = read_parquet(self.out / "schedule.parquet")
        meta = read_json(self.out / "schedule.json")
        ids = [e.id for e in self.examples("train")]
        piv = df.pivot(index="stage", columns="id", values="input_steps")[ids]
        n = df[df.stage == 0].set_index("id").loc[ids, "n_steps"].to_numpy()
        return Schedule(
            piv.to_numpy().astype(np.int64),
            n,
            DifficultyBudget(**meta["budget"]),
            meta["stats"],
            meta["feasible"],
        )

    # ---------------------------------------------------------------- distill
    def distill(self, name: str | None = None, dcfg: DistillConfig | None = None) -> Path:
        """Train one student (resuming from its per-epoch checkpoint); returns its folder."""
        dcfg = dataclasses.replace(dcfg or self.cfg.distill, device=self.cfg.device)
        name = name or dcfg.method
        needs = dcfg.method == "kpod"
        h = config_hash(
            {
                "distill": asdict(dcfg),
                "upstream": self._h("schedule") if needs else self._h("prepare"),
            }
        )
        stage = f"distill_{name}"
        final = self.out / "students" / name
        if stage_done(self.out, stage, h, force=self.force):
            return final
        model, tok = self.load_student()
        train = self.examples("train")
        weights = self.load_weights(tok, train) if needs and dcfg.use_weights else None
        sched = self.load_schedule() if needs and dcfg.progressive else None
        if sched is not None and dcfg.epochs < sched.T:
            log.warning(
                "%d epochs < T=%d stages: the schedule never reaches full rationales",
                dcfg.epochs,
                sched.T,
            )
        trainer = DistillTrainer(model, tok, dcfg)
        ckpt = self.out / "students" / f"{name}.ckpt"
        if ckpt.is_dir() and not self.force:
            state = torch.load(ckpt / "trainer.pt", weights_only=False)
            if state["hash"] == h:
                trainer.unwrapped.load_state_dict(torch.load(ckpt / "model.pt", weights_only=True))
                trainer.load_state_dict(state)

        def save(tr: DistillTrainer) -> None:  # per-epoch checkpoint (plain or LoRA-wrapped)
            save_model_dir(
                ckpt,
                None,
                None,
                {
                    "model.pt": tr.unwrapped.state_dict(),
                    "trainer.pt": {"hash": h, **tr.state_dict()},
                },
            )

        left = dcfg.epochs - trainer.epoch
        if left > 0:
            trainer.train(
                train,
                weights=weights,
                schedule=sched,
                show_progress=self.show,
                epochs=left,
                on_epoch_end=save,
            )
        student = trainer.unwrapped
        if hasattr(student, "merge_and_unload"):  # LoRA: save a plain model with merged adapters
            student = student.merge_and_unload()
        save_model_dir(final, student, tok, {"train_log.json": trainer.history})
        shutil.rmtree(ckpt, ignore_errors=True)
        mark_done(self.out, stage, h, {"epochs": trainer.epoch})
        return final

    # ---------------------------------------------------------------- eval
    def evaluate(self, name: str, method: str | None = None) -> dict[str, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.out / "students" / name
        if not path.is_dir():
            raise KPODDataError(f"{path}: no distilled student {name!r} (run distill first)")
        model = AutoModelForCausalLM.from_pretrained(path).to(self.cfg.device)
        tok = AutoTokenizer.from_pretrained(path)
        test = self.examples("test")
        if not test:
            raise KPODDataError("no test examples to evaluate")
        tpl = method_template(method or name.split("-")[0])
        res = evaluate(
            model,
            tok,
            test,
            tpl,
            max_new_tokens=self.cfg.max_new_tokens,
            batch_size=self.cfg.eval_batch_size,
            device=self.cfg.device,
            show_progress=self.show,
        )
        write_parquet(
            self.out / f"predictions_{name}.parquet",
            pd.DataFrame(
                {
                    "id": [e.id for e in test],
                    "gold": [e.answer for e in test],
                    "prediction": res.predictions,
                    "correct": res.correct,
                    "generation": res.generations,
                }
            ),
        )
        summary = res.summary() | {"student": name}
        write_json(self.out / f"eval_{name}.json", summary)
        return summary

    def run(self, methods: tuple[str, ...] = ("answer_only", "cot", "kpod")) -> dict[str, Any]:
        """All stages, then distil and evaluate each method; returns ``{method: eval summary}``."""
        self.prepare()
        if "kpod" in methods:
            self.weights()
            self.difficulty()
            self.schedule()
        out = {}
        for m in methods:
            self.distill(m, dataclasses.replace(self.cfg.distill, method=m))
            out[m] = self.evaluate(m, m)
        return out


_ = TokenWeighter
