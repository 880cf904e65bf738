"""Evaluation (Sec. 4.1): greedy decoding (batched, KV cache), answer extraction, accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from kpod.answers import extract_answer, is_correct
from kpod.encoding import Template, wants_bos
from kpod.schema import CoTExample
from shared import progress

__all__ = ["EvalResult", "evaluate", "generate"]


@dataclass
class EvalResult:
    """Accuracy and what was generated, per example."""

    accuracy: float
    n: int
    correct: list[bool] = field(default_factory=list)
    predictions: list[str | None] = field(default_factory=list)
    generations: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        empty = sum(1 for g in self.generations if not g.strip())
        return {"accuracy": self.accuracy, "n": self.n, "empty_generations": empty}


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int = 96,
    batch_size: int = 32,
    device: str = "cpu",
    add_bos: bool | None = None,
    show_progress: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches, KV cache); decoded new text."""
    model.eval()
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if add_bos is None:
        add_bos = wants_bos(tokenizer) and not seq2seq
    out: list[str] = []
    chunks = range(0, len(prompts), batch_size)
    for s in progress(chunks, desc="generate", disable=not show_progress or None):
        batch = prompts[s : s + batch_size]
        enc = [tokenizer(p, add_special_tokens=seq2seq)["input_ids"] for p in batch]
        if add_bos:
            enc = [[tokenizer.bos_token_id, *e] for e in enc]
        T = max(len(e) for e in enc)
        ids = torch.full((len(enc), T), pad, dtype=torch.long)
        att = torch.zeros(len(enc), T, dtype=torch.long)
        for i, e in enumerate(enc):
            if seq2seq:
                ids[i, : len(e)], att[i, : len(e)] = torch.tensor(e), 1
            else:  # left padding: every prompt ends where generation starts
                ids[i, T - len(e) :], att[i, T - len(e) :] = torch.tensor(e), 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=att.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = gen if seq2seq else gen[:, T:]
        out.extend(tokenizer.decode(row, skip_special_tokens=True) for row in new.tolist())
    return out


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: list[CoTExample],
    template: Template | None = None,
    *,
    max_new_tokens: int = 96,
    batch_size: int = 32,
    device: str = "cpu",
    show_progress: bool = False,
) -> EvalResult:
    """Accuracy of greedy generations against the gold answers."""
    template = template or Template()
    if not examples:
        raise ValueError("no examples to evaluate")
    prompts = [template.prompt(ex) for ex in examples]
    gens = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
    )
    preds = [extract_answer(g, ex.kind) for g, ex in zip(gens, examples, strict=True)]
    ok = [is_correct(p, ex.answer, ex.kind) for p, ex in zip(preds, examples, strict=True)]
    return EvalResult(float(np.mean(ok)), len(ok), ok, preds, gens)
