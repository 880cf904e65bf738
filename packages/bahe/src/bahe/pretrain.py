"""A short language-model pre-training of a tiny random model on the behaviour corpus.

BAHE assumes a *pre-trained* LLM whose shallow layers already encode what a behaviour means.
A randomly initialised tiny model has no such knowledge, so its frozen lower layers would give
BAHE random features while the naive baseline, which fine-tunes every layer, can still learn the
word meanings. To compare like with like on synthetic data, the tiny models used by the demo,
the quality claim and the CLI (``--pretrain-steps``) are first pre-trained for a few hundred
steps on the unique behaviour texts: masked-token prediction for encoders, next-token prediction
for causal decoders, with the output projection tied to the input embeddings. Real pre-trained
models (MiniLM, SmolLM2) skip this.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .lm import _base_model, detect_family

__all__ = ["pretrain_lm"]


def _embedding(base: nn.Module, family: str) -> nn.Embedding:
    if family == "bert":
        return base.embeddings.word_embeddings
    if family == "llama":
        return base.embed_tokens
    return base.wte


def pretrain_lm(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 3e-3,
    mask_prob: float = 0.15,
    max_tokens: int = 32,
    seed: int = 0,
) -> list[float]:
    """Pre-train ``model`` in place on ``texts`` (MLM for encoders, next token for decoders);
    returns the loss per step. Deterministic for a given seed."""
    if steps < 0 or batch_size < 1 or not lr > 0 or not 0 < mask_prob < 1:
        raise ValueError("pretrain_lm: steps >= 0, batch_size >= 1, lr > 0, 0 < mask_prob < 1")
    texts = list(texts)
    if not texts:
        raise ValueError("pretrain_lm needs texts")
    base = _base_model(model)
    family = detect_family(base)
    causal = family != "bert"
    emb = _embedding(base, family)
    bias = nn.Parameter(torch.zeros(emb.num_embeddings))
    params = [p for p in base.parameters()] + [bias]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr)
    rng = np.random.default_rng([seed, 99])
    gen = torch.Generator().manual_seed(seed)
    mask_id = (
        tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    )
    tokenizer.padding_side = "right"
    losses = []
    base.train()
    for _ in range(steps):
        pick = [texts[i] for i in rng.integers(0, len(texts), batch_size)]
        enc = tokenizer(
            pick, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
        )
        ids, am = enc["input_ids"], enc["attention_mask"]
        if causal:
            inputs = ids
            target = ids.clone()[:, 1:]
            valid = am[:, 1:].bool()
        else:
            sel = (torch.rand(ids.shape, generator=gen) < mask_prob) & am.bool()
            sel[:, 0] |= ~sel.any(1) & am[:, 0].bool()  # at least one target per row
            inputs = ids.masked_fill(sel, mask_id)
            target, valid = ids, sel
        h = base(input_ids=inputs, attention_mask=am, use_cache=False).last_hidden_state
        if causal:
            h = h[:, :-1]
        logits = h[valid] @ emb.weight.T + bias
        loss = nn.functional.cross_entropy(logits, target[valid])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    base.eval()
    return losses
