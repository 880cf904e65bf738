import numpy as np
import pytest
import torch
from bahe.data import SyntheticConfig, make_synthetic

torch.set_num_threads(1)

FAMILIES = ("bill", "search")


@pytest.fixture(scope="session")
def synth():
    cfg = SyntheticConfig(
        n_users=60,
        n_items=40,
        n_rows=400,
        families=FAMILIES,
        behaviors_per_family=5,
        words_per_behavior=5,
        phrases_per_topic=6,
        n_topics=4,
        seed=3,
    )
    train, test, truth = make_synthetic(cfg)
    return train, test, truth


@pytest.fixture(scope="session")
def tok(synth):
    from shared.lm import train_tokenizer

    train, test, _ = synth
    return train_tokenizer(train.texts() + test.texts() + ["hello world", "Pay BILL now"])


def make_lm(tok, arch="bert", num_lower=2, layers=4, pooling=None, attn=None, seed=0):
    from bahe.lm import SplitLM

    from shared.lm import tiny_causal_lm, tiny_encoder

    if arch == "bert":
        m = tiny_encoder(tok, layers=layers, hidden=32, heads=4, seed=seed)
    else:
        m = tiny_causal_lm(tok, arch=arch, layers=layers, hidden=32, heads=4, seed=seed)
    m.config._name_or_path = f"tiny-{arch}"
    return SplitLM(
        m, tok, num_lower, pooling=pooling, attn_implementation=attn, max_behavior_tokens=16
    )


@pytest.fixture
def lm(tok):
    return make_lm(tok)


def rows(n):
    return np.arange(n)
