"""Functions run inside ranks started by shared.spawn (importable by the spawned processes)."""

from __future__ import annotations

import numpy as np
import torch


def ddp_distill(n_examples: int, batch_size: int, epochs: int) -> list[float]:
    """Distil with KPOD's weighted loss data-parallel over the process group; flat params."""
    import torch.distributed as dist
    from kpod import (
        DistillConfig,
        DistillTrainer,
        SyntheticConfig,
        Template,
        build_schedule,
        build_tokenizer,
        encode,
        make_synthetic,
        synthetic_corpus,
    )

    from shared.lm import tiny_causal_lm

    torch.set_num_threads(1)
    train, _ = make_synthetic(SyntheticConfig(n_train=n_examples, n_test=0, seed=5))
    t = Template()
    tok = build_tokenizer(
        [t.prompt(e) + e.rationale + t.answer.format(answer=e.answer) for e in train]
        + synthetic_corpus(50)
    )
    model = tiny_causal_lm(tok, layers=1, hidden=32, heads=2, seed=0)
    enc = [encode(e, tok) for e in train]
    weights = {
        e.id: np.linspace(0.2, 0.9, len(x.rationale_tokens)).astype(np.float32)
        for e, x in zip(train, enc, strict=True)
    }
    sched = build_schedule([np.ones(x.n_steps) for x in enc], np.arange(len(enc)) % 2)
    tr = DistillTrainer(
        model, tok, DistillConfig(method="kpod", epochs=epochs, batch_size=batch_size, lr=3e-3)
    )
    tr.train(train, weights=weights, schedule=sched)
    flat = torch.cat([p.detach().flatten() for p in tr.unwrapped.parameters()])
    if dist.is_initialized():
        other = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(other, flat)
        assert all(torch.equal(other[0], o) for o in other), "ranks diverged"
    return flat.tolist()
