"""Students: the embedded tiny default, a Hugging Face path, or SmolLM2-135M-Instruct.

The paper distils into pre-trained students (LLaMA-7B, FlanT5). Eq. 8 needs the student
*before* distillation to score step difficulty, so a random network will not do. The embedded
default is a tiny randomly initialised Llama (``shared.lm.tiny_causal_lm``) with a tokenizer
trained locally (``shared.lm.train_tokenizer``), briefly pre-trained by :func:`pretrain_lm` on
text that is not the task (bare equations and filler sentences, :func:`kpod.synthetic.
synthetic_corpus`): a stand-in for pre-training (documented deviation).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from shared import progress

__all__ = ["TinyStudentConfig", "build_tokenizer", "pretrain_lm", "tiny_student"]


@dataclass(frozen=True)
class TinyStudentConfig:
    """The embedded default student."""

    arch: str = "llama"
    layers: int = 2
    hidden: int = 96
    heads: int = 4
    pretrain_steps: int = 150
    pretrain_batch: int = 32
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ("llama", "gpt2", "qwen2"):
            raise ValueError(f"arch must be llama, gpt2 or qwen2, got {self.arch!r}")
        if min(self.layers, self.hidden, self.heads, self.pretrain_batch) < 1:
            raise ValueError("layers, hidden, heads, pretrain_batch must be >= 1")
        if self.pretrain_steps < 0 or self.lr <= 0:
            raise ValueError("pretrain_steps >= 0 and lr > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> Any:
    """A word-level tokenizer trained locally (digits split into single tokens)."""
    from shared.lm import train_tokenizer

    return train_tokenizer(list(texts), vocab_size=vocab_size, model="wordlevel")


def pretrain_lm(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: list[str],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    device: str = "cpu",
    show_progress: bool = False,
) -> list[float]:
    """Plain next-token training on ``texts`` (the stand-in for pre-training). Returns losses."""
    if steps == 0:
        return []
    if not texts:
        raise ValueError("pretrain_lm needs texts")
    rng = np.random.default_rng(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    pad = tokenizer.pad_token_id
    losses = []
    for _ in progress(range(steps), desc="pretrain", disable=not show_progress or None):
        idx = rng.integers(0, len(texts), size=batch_size)
        enc = [tokenizer(texts[i], add_special_tokens=False)["input_ids"] for i in idx]
        enc = [[*e, tokenizer.eos_token_id] for e in enc]
        T = max(len(e) for e in enc)
        ids = torch.full((len(enc), T), pad, dtype=torch.long)
        att = torch.zeros(len(enc), T, dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, : len(e)] = torch.tensor(e)
            att[i, : len(e)] = 1
        labels = ids.masked_fill(att == 0, -100)
        out = model(
            input_ids=ids.to(device), attention_mask=att.to(device), labels=labels.to(device)
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(out.loss.detach()))
    model.eval()
    return losses


def tiny_student(
    tokenizer: Any,
    cfg: TinyStudentConfig | None = None,
    corpus: list[str] | None = None,
    *,
    device: str = "cpu",
    show_progress: bool = False,
) -> torch.nn.Module:
    """The embedded default student: a tiny Llama, pre-trained on ``corpus`` when given."""
    from shared.lm import tiny_causal_lm

    cfg = cfg or TinyStudentConfig()
    model = tiny_causal_lm(
        tokenizer,
        arch=cfg.arch,
        layers=cfg.layers,
        hidden=cfg.hidden,
        heads=cfg.heads,
        seed=cfg.seed,
    )
    if corpus:
        pretrain_lm(
            model,
            tokenizer,
            corpus,
            steps=cfg.pretrain_steps,
            batch_size=cfg.pretrain_batch,
            lr=cfg.lr,
            seed=cfg.seed,
            device=device,
            show_progress=show_progress,
        )
    return model.to(device).eval()


def clone(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model)
