from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from kpod import Template, make_synthetic, synthetic_corpus
from kpod.synthetic import SyntheticConfig

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def gsm8k_dir() -> Path:
    env = os.environ.get("KPOD_GSM8K_DIR")
    if env:
        return Path(env)
    # packages/kpod/tests -> repository root -> beside it: shared/data/gsm8k
    return Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "gsm8k"


@pytest.fixture(scope="session")
def gsm8k() -> Path:
    d = gsm8k_dir()
    if not (d / "train.jsonl").is_file():
        pytest.skip(f"GSM8K not found at {d} (set KPOD_GSM8K_DIR)")
    return d


@pytest.fixture(scope="session")
def synth():
    return make_synthetic(SyntheticConfig(n_train=48, n_test=12, seed=3))


@pytest.fixture(scope="session")
def tok(synth):
    from kpod import build_tokenizer

    t = Template()
    train, test = synth
    texts = [t.prompt(e) + e.rationale + t.answer.format(answer=e.answer) for e in train + test]
    return build_tokenizer(texts + synthetic_corpus(200) + ["[label] [rationale]"])


@pytest.fixture()
def student(tok):
    from shared.lm import tiny_causal_lm

    return tiny_causal_lm(tok, layers=1, hidden=32, heads=2, seed=0)
