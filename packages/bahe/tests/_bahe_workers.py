"""Functions run in spawned ranks by test_distributed.py (module level, so they pickle)."""

from __future__ import annotations

import numpy as np
import torch


def setup(seed: int = 3):
    from bahe.data import SyntheticConfig, make_synthetic
    from bahe.lm import SplitLM

    from shared.lm import tiny_encoder, train_tokenizer

    torch.set_num_threads(1)
    cfg = SyntheticConfig(
        n_users=40,
        n_items=30,
        n_rows=160,
        families=("bill", "search"),
        behaviors_per_family=4,
        words_per_behavior=5,
        phrases_per_topic=5,
        n_topics=4,
        seed=seed,
    )
    train, test, _ = make_synthetic(cfg)
    tok = train_tokenizer(train.texts() + test.texts())
    model = tiny_encoder(
        tok,
        layers=3,
        hidden=32,
        heads=4,
        seed=0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model.config._name_or_path = "tiny-bert"
    return train, SplitLM(model, tok, 1)


def build(root: str):
    from bahe.store import build_store

    train, lm = setup()
    store = build_store(train.catalog, lm, root, dtype="float32")
    return np.asarray(store.keys).copy(), np.asarray(store.vectors).copy(), store.manifest["stats"]


def ddp_train(root: str, steps: int, batch: int):
    from bahe.model import BAHECTR, BAHEConfig
    from bahe.store import BehaviorStore
    from bahe.train import TrainConfig, train

    data, lm = setup()
    store = BehaviorStore.open(root, expect=lm.identity())
    torch.manual_seed(0)
    model = BAHECTR(
        lm, store, BAHEConfig(families=data.families, max_behaviors=4, head_norm="none")
    )
    res = train(model, data, TrainConfig(steps=steps, batch_size=batch, lr=1e-2, grad_clip=None))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, res.losses


def build_then_train(root: str, steps: int, batch: int):
    """Data-parallel store build, then DDP training on it, in the same ranks."""
    keys, vec, stats = build(root)
    state, losses = ddp_train(root, steps, batch)
    return keys, vec, stats, state, losses
