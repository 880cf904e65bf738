from __future__ import annotations

import numpy as np
import pytest
import torch
from kpod import (
    DistillConfig,
    DistillTrainer,
    KPODDataError,
    Template,
    align_weights,
    build_schedule,
    causal_targets,
    encode,
    encode_all,
    method_template,
    step_difficulty,
    token_nll,
    weighted_nll,
)
from kpod.encoding import ANSWER


def test_token_nll_matches_hf_loss(synth, tok, student):
    e = encode(synth[0][0], tok)
    nll = token_nll(student, [e], pad_id=tok.pad_token_id)[0]
    ids = torch.as_tensor(e.input_ids)[None]
    loss = student(input_ids=ids, labels=ids).loss
    assert float(nll[1:].mean()) == pytest.approx(float(loss.detach()), rel=1e-5)
    assert nll[0] == 0


def test_step_difficulty_eq8(synth, tok, student):
    enc = encode_all(synth[0][:5], tok)
    nll = token_nll(student, enc, pad_id=tok.pad_token_id)
    uni = step_difficulty(student, enc, None, normalize="uniform", nll=nll)
    for e, d, n in zip(enc, uni, nll, strict=True):
        for k in range(e.n_steps):
            assert d[k] == pytest.approx(n[e.step_tokens(k)].mean())  # uniform = mean step NLL
    # equal weights: softmax is uniform
    eq = step_difficulty(
        student, enc, [np.full(len(e.rationale_tokens), 0.7) for e in enc], nll=nll
    )
    for a, b in zip(eq, uni, strict=True):
        np.testing.assert_allclose(a, b)
    # weights on one token with a sharp temperature: the difficulty is that token's NLL
    e = enc[0]
    w = np.zeros(len(e.rationale_tokens))
    j = int(np.nonzero(e.segment[e.rationale_tokens] == 0)[0][2])
    w[j] = 1.0
    sharp = step_difficulty(student, [e], [w], temperature=1e-3, nll=nll[:1])[0]
    assert sharp[0] == pytest.approx(nll[0][e.rationale_tokens[j]], rel=1e-4)
    with pytest.raises(ValueError, match="weights are needed"):
        step_difficulty(student, enc, None)
    with pytest.raises(ValueError, match="weights for"):
        step_difficulty(student, enc[:1], [np.ones(3)], nll=nll[:1])


def test_causal_targets_cover_exactly_output_steps_and_answer(synth, tok):
    e = encode(synth[0][2], tok)
    w = np.linspace(0.1, 0.9, len(e.rationale_tokens)).astype(np.float32)
    for c in range(e.n_steps + 1):
        lw = causal_targets(e, c, w)
        want = ((e.segment >= c) | (e.segment == ANSWER)) & (np.arange(len(lw)) > 0)
        np.testing.assert_array_equal(lw > 0, want)
        rt = e.rationale_tokens
        out = e.segment[rt] >= c
        np.testing.assert_allclose(lw[rt[out]], w[out])  # weights aligned with output tokens
        assert (lw[e.segment == ANSWER] == 1.0).all()
    mean = causal_targets(e, 0, w, weight_norm="mean")
    assert mean[e.rationale_tokens].mean() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError):
        causal_targets(e, 0, w[:-1])


def test_step_start_answer_gives_each_output_steps_first_token_the_answer_weight(synth, tok):
    """The stop-or-continue decision (first token of a step vs the answer sentence) carries
    the same weight on both branches; every other token keeps its own weight."""
    from kpod.distill import _seq2seq_pair

    e = encode(synth[0][2], tok)
    w = np.linspace(0.1, 0.9, len(e.rationale_tokens)).astype(np.float32)
    for c in range(e.n_steps + 1):
        plain = causal_targets(e, c, w, answer_weight=0.7)
        lw = causal_targets(e, c, w, answer_weight=0.7, step_start="answer")
        firsts = [e.step_tokens(k)[0] for k in range(c, e.n_steps)]
        np.testing.assert_allclose(lw[firsts], 0.7)
        rest = np.setdiff1d(np.arange(len(lw)), firsts)
        np.testing.assert_array_equal(lw[rest], plain[rest])
    # an encoder-decoder student: the target token reaching into each output step
    _, _, lw = _seq2seq_pair(e, 1, w, tok, 0.7, "answer")
    _, _, plain = _seq2seq_pair(e, 1, w, tok, 0.7)
    changed = np.nonzero(lw != plain)[0]
    assert 0 < len(changed) <= e.n_steps - 1 and np.allclose(lw[changed], 0.7)
    with pytest.raises(ValueError, match="step_start"):
        DistillConfig(step_start="first")


def test_no_example_loses_all_labels(synth, tok):
    e = encode(synth[0][0], tok, Template().answer_only())
    assert causal_targets(e, 0, None).sum() > 0
    with pytest.raises(KPODDataError, match="no token carries loss"):
        causal_targets(e, 0, None, answer_weight=0.0)


def test_eq15_with_unit_weights_is_eq14(synth, tok, student):
    enc = encode_all(synth[0][:3], tok)
    ids = torch.as_tensor(enc[0].input_ids)[None]
    logits = student(input_ids=ids).logits
    ones = causal_targets(enc[0], 1, np.ones(len(enc[0].rationale_tokens)))
    plain = causal_targets(enc[0], 1, None)
    a = weighted_nll(logits, ids, torch.as_tensor(ones)[None])
    b = weighted_nll(logits, ids, torch.as_tensor(plain)[None])
    assert torch.allclose(a, b)
    # and equals HF's summed CE over the same labels
    labels = ids.clone()
    labels[0, torch.as_tensor(plain) == 0] = -100
    ce = torch.nn.functional.cross_entropy(
        logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum"
    )
    assert float(a.detach()) == pytest.approx(float(ce.detach()), rel=1e-5)


def test_align_weights_identity_and_cross_tokenizer(synth, tok):
    from shared.lm import train_tokenizer

    ex = synth[0][4]
    e = encode(ex, tok)
    w = np.random.default_rng(0).random(len(e.rationale_tokens)).astype(np.float32)
    same = align_weights(e, e.rationale_offsets(), w)
    np.testing.assert_allclose(same, w)
    t = Template()
    bpe = train_tokenizer(
        [t.prompt(x) + x.rationale for x in synth[0]], vocab_size=300, model="bpe"
    )
    e2 = encode(ex, bpe)
    w2 = align_weights(e2, e.rationale_offsets(), w)
    assert w2.shape == (len(e2.rationale_tokens),)
    # a character keeps its weight: tokens covering one source token inherit its weight
    for (s, t_), v in zip(e2.rationale_offsets(), w2, strict=True):
        piece = ex.rationale[s:t_]
        src = [
            wi
            for (a, b), wi in zip(e.rationale_offsets(), w, strict=True)
            if a <= s and t_ <= b and piece.strip()
        ]
        if src:
            assert v == pytest.approx(src[0])


def _train(method, synth, tok, student, **kw):
    cfg = DistillConfig(method=method, epochs=2, batch_size=8, lr=3e-3, **kw)
    tr = DistillTrainer(student, tok, cfg)
    ex = synth[0][:16]
    weights = {e.id: np.full(len(encode(e, tok).rationale_tokens), 0.5, np.float32) for e in ex}
    enc = encode_all(ex, tok)
    sched = build_schedule([np.ones(x.n_steps) for x in enc], np.zeros(len(ex), int))
    return tr, tr.train(ex, weights=weights, schedule=sched)


@pytest.mark.parametrize("method", ["kpod", "cot", "answer_only", "step_by_step"])
def test_every_method_trains(method, synth, tok, student):
    _tr, hist = _train(method, synth, tok, student)
    assert len(hist) == 2 and all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in hist)
    assert all(h["target_tokens"] > 0 for h in hist)


def test_progressive_schedule_trains_fewer_tokens_early(synth, tok, student):
    _tr, hist = _train("kpod", synth, tok, student)
    _, hist_np = _train("kpod", synth, tok, student, progressive=False)
    assert hist[0]["mean_input_steps"] > 0
    assert hist[0]["target_tokens"] < hist_np[0]["target_tokens"]


def test_kpod_needs_weights_and_schedule(synth, tok, student):
    tr = DistillTrainer(student, tok, DistillConfig(method="kpod", epochs=1))
    with pytest.raises(ValueError, match="needs a schedule"):
        tr.train(synth[0][:4], weights={})
    tr = DistillTrainer(student, tok, DistillConfig(method="kpod", epochs=1, progressive=False))
    with pytest.raises(KPODDataError, match="needs token weights"):
        tr.train(synth[0][:4], weights={})
    with pytest.raises(ValueError):
        DistillConfig(method="magic")


def test_lora_option(synth, tok, student):
    pytest.importorskip("peft")
    tr, hist = _train("cot", synth, tok, student, lora_rank=4)
    trainable = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in tr.model.parameters())
    assert 0 < trainable < total / 2
    assert np.isfinite(hist[-1]["loss"])


def test_lora_adapters_start_from_the_config_seed(tok):
    """LoRA's random initial adapters come from ``cfg.seed``, not the global generator."""
    pytest.importorskip("peft")
    from shared.lm import tiny_causal_lm

    states = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        model = tiny_causal_lm(tok, layers=1, hidden=32, heads=2, seed=0)
        tr = DistillTrainer(model, tok, DistillConfig(method="cot", lora_rank=2, seed=3))
        states.append({k: v.clone() for k, v in tr.model.state_dict().items() if "lora_A" in k})
    assert states[0] and states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_seq2seq_student_trains(synth, tok):
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(cfg)
    _tr, hist = _train("kpod", synth, tok, model)
    assert np.isfinite(hist[-1]["loss"])


def test_method_templates():
    assert method_template("cot").with_rationale
    assert not method_template("answer_only").with_rationale
    assert method_template("step_by_step").task_prefix == "[label] "
