"""Rank functions for test_kpod_with_paro.py (imported by the processes shared.spawn starts).

No tests here: pytest collects the module and finds none."""

from __future__ import annotations

import copy

import numpy as np
import torch


def kpod_loss_under_paro(strategy: str, steps: int) -> float:
    """KPOD's weighted distillation loss (Eq. 15) on a tiny Hugging Face student, trained by the
    PaRO engine with each rank on its share of every batch; returns the relative max difference
    to single-process AdamW on whole batches."""
    import torch.distributed as dist
    from kpod import (
        SyntheticConfig,
        Template,
        build_tokenizer,
        causal_targets,
        encode,
        make_synthetic,
        synthetic_corpus,
        weighted_nll,
    )
    from paro import ParoDataParallel, build_groups

    from shared import get_info
    from shared.lm import tiny_causal_lm

    torch.set_num_threads(1)
    info = get_info()
    rank, world = dist.get_rank(), dist.get_world_size()
    train, _ = make_synthetic(SyntheticConfig(n_train=8 * steps, n_test=0, seed=2))
    t = Template()
    tok = build_tokenizer(
        [t.prompt(e) + e.rationale + t.answer.format(answer=e.answer) for e in train]
        + synthetic_corpus(50)
    )
    model = tiny_causal_lm(tok, layers=1, hidden=32, heads=2, seed=0).to(info.device)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    engine = ParoDataParallel(
        model,
        lambda ps: torch.optim.AdamW(ps, lr=1e-3),
        strategy,
        groups=build_groups(group_size=world),
    )

    def loss_of(m, exs):
        enc = [encode(e, tok) for e in exs]
        lws = [causal_targets(x, 1, np.linspace(0.2, 0.9, len(x.rationale_tokens))) for x in enc]
        T = max(len(x.input_ids) for x in enc)
        ids = torch.full((len(enc), T), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        lw = torch.zeros(len(enc), T)
        for i, (x, w) in enumerate(zip(enc, lws, strict=True)):
            ids[i, : len(x.input_ids)] = torch.as_tensor(x.input_ids)
            att[i, : len(x.input_ids)] = 1
            lw[i, : len(w)] = torch.as_tensor(w)
        ids, att, lw = ids.to(info.device), att.to(info.device), lw.to(info.device)
        return weighted_nll(m(input_ids=ids, attention_mask=att).logits, ids, lw).mean()

    for s in range(steps):
        batch = train[8 * s : 8 * (s + 1)]
        engine.backward(loss_of(engine, batch[rank::world]))
        engine.step()
        ref_opt.zero_grad()
        loss_of(ref, batch).backward()
        ref_opt.step()
    flat_ref = torch.cat([p.detach().reshape(-1) for p in ref.parameters()])
    got = engine.full_parameters()
    return ((got - flat_ref).abs().max() / flat_ref.abs().max()).item()
