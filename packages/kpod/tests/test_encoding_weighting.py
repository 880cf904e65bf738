from __future__ import annotations

import numpy as np
import pytest
import torch
from kpod import (
    ANSWER,
    PROMPT,
    KPODDataError,
    Template,
    WeightingConfig,
    auroc,
    encode,
    encode_all,
    fit_weighting,
    gumbel_keep_mask,
    token_weights,
)
from kpod.schema import CoTExample
from kpod.weighting import TokenWeighter, collate_weighting


def test_encode_segments_and_roles(synth, tok):
    ex = synth[0][0]
    e = encode(ex, tok)
    assert e.input_ids[-1] == tok.eos_token_id and tok.bos_token_id not in e.input_ids
    assert e.n_steps == len(ex.step_hardness)
    # segments run prompt -> steps 0..n-1 in order -> answer
    seg = e.segment
    assert seg[0] == PROMPT and seg[-1] == ANSWER
    inner = seg[(seg >= 0)]
    assert (np.diff(inner) >= 0).all() and set(inner) == set(range(e.n_steps))
    first_r, last_r = np.nonzero(seg >= 0)[0][[0, -1]]
    assert (seg[:first_r] == PROMPT).all() and (seg[last_r + 1 :] == ANSWER).all()
    # every token's text lies inside its step's span
    for i in e.rationale_tokens:
        s, t = e.offsets[i] - e.rationale_start
        piece = e.text[e.rationale_start + s : e.rationale_start + t].strip()
        a, _b = e.step_spans[seg[i]]
        if piece:
            assert ex.rationale.find(piece, a) >= a
    # role labels: keypoint tokens are digits/operators, filler tokens are words
    roles = e.roles[e.rationale_tokens]
    texts = [e.text[s:t].strip() for s, t in e.offsets[e.rationale_tokens]]
    assert {t for t, r in zip(texts, roles, strict=True) if r == 1} <= set("0123456789+-*=")
    assert all(t.isalpha() for t, r in zip(texts, roles, strict=True) if r == 0)
    # the answer value tokens are the labels of Eq. 5
    lab = e.answer_label_mask
    assert "".join(e.text[s:t] for s, t in e.offsets[lab]).strip() == ex.answer + "."[
        :0
    ] or lab.sum() >= len(ex.answer)


def test_encode_errors(tok):
    ex = CoTExample(id="x", question="q?", rationale="", answer="1")
    with pytest.raises(KPODDataError, match="empty rationale"):
        encode(ex, tok)
    ok = encode(ex, tok, Template().answer_only())
    assert ok.n_steps == 0 and (ok.segment == ANSWER).any()
    ex2 = CoTExample(id="y", question="q?", rationale="so 1+1=2 .", answer="2")
    with pytest.raises(KPODDataError, match="exceed max_length"):
        encode(ex2, tok, max_length=5)


def test_gumbel_mask_is_binary_with_mean_w():
    g = torch.Generator().manual_seed(0)
    w = torch.full((20000,), 0.3)
    m = gumbel_keep_mask(w, 1.0, True, g)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(m.mean()) - 0.3) < 0.02  # P(keep) = w exactly at tau = 1
    soft = gumbel_keep_mask(w, 1.0, False, g)
    assert ((soft > 0) & (soft < 1)).all()


@pytest.mark.parametrize("estimator", ["straight_through", "score"])
def test_gradient_reaches_weight_generator_through_gumbel_mask(synth, tok, student, estimator):
    """Eq. 5 alone (alpha = 0) must move f_w: through the straight-through Gumbel mask, or
    through the score-function surrogate of E[L_p]."""
    enc = encode_all(synth[0][:6], tok)
    cfg = WeightingConfig(alpha=0.0, prefixes=3, estimator=estimator)
    mod = TokenWeighter(
        student.get_input_embeddings(), student, mlp_hidden=16, mask_token_id=tok.mask_token_id
    )
    batch = collate_weighting(enc, tok.pad_token_id, 3, np.random.default_rng(0))
    out = mod(batch, cfg, alpha=0.0, generator=torch.Generator().manual_seed(0))
    assert out["L_m"] > 0 and out["L_p"] > 0
    out.get("loss", out["L_k"]).backward()
    for p in (mod.mlp[0].weight, mod.mlp[2].weight, mod.attn.in_proj_weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert mod.embed.weight.grad is None  # the student's embedding stays frozen
    # negative control: with the mask detached (token replacement after a threshold, as the
    # public third-party code does) no gradient of L_p reaches f_w
    mod.zero_grad()
    w = mod.weights(batch["r_ids"], batch["r_valid"])
    m = (w > 0.5).float().detach()
    assert not m.requires_grad


def test_prefix_cuts_include_step_ends_and_full_length(synth, tok):
    e = encode(synth[0][1], tok)
    batch = collate_weighting([e], tok.pad_token_id, 2, np.random.default_rng(0))
    L = len(e.rationale_tokens)
    cuts = batch["cuts"][0]
    assert L in cuts and len(cuts) >= e.n_steps
    all_cuts = collate_weighting([e], tok.pad_token_id, 0, np.random.default_rng(0))["cuts"][0]
    assert all_cuts == list(range(L + 1))


def test_fit_weighting_outputs_aligned_weights(synth, tok, student):
    enc = encode_all(synth[0][:16], tok)
    cfg = WeightingConfig(steps=3, predictor_warmup=2, batch_size=4, mlp_hidden=16)
    before = [p.detach().clone() for p in student.parameters()]
    mod, hist = fit_weighting(enc, student, tok, cfg)
    assert len(hist) == 5 and all(np.isfinite(h["L_k"]) for h in hist)
    assert 0 < hist[0]["keep"] < 1  # warm-up feeds randomly masked rationales
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    ws = token_weights(mod, enc, pad_id=tok.pad_token_id)
    for e, w in zip(enc, ws, strict=True):
        assert w.shape == (len(e.rationale_tokens),)
        assert ((w > 0) & (w < 1)).all()
    with pytest.raises(ValueError):
        fit_weighting([], student, tok, cfg)
    with pytest.raises(ValueError):
        WeightingConfig(init_keep=1.0)


def test_fit_weighting_is_repeatable_whatever_the_global_rng(synth, tok, student):
    """The module's initial values come from ``cfg.seed``, not from the process's global
    generator (which torch seeds at random per process: 0.2.0's runs differed run to run)."""
    enc = encode_all(synth[0][:12], tok)
    cfg = WeightingConfig(steps=2, predictor_warmup=1, batch_size=4, mlp_hidden=16)
    out = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        mod, hist = fit_weighting(enc, student, tok, cfg)
        out.append((token_weights(mod, enc, pad_id=tok.pad_token_id), hist))
    (w1, h1), (w2, h2) = out
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert h1 == h2
    torch.manual_seed(1)
    mod3, _ = fit_weighting(enc, student, tok, WeightingConfig(**{**cfg.to_dict(), "seed": 7}))
    w3 = token_weights(mod3, enc, pad_id=tok.pad_token_id)
    assert not all(np.array_equal(a, b) for a, b in zip(w1, w3, strict=True))  # seed matters


def test_answer_nll_through_the_output_head_equals_the_full_forward(synth, tok, student):
    """Logits only at the answer positions (memory) give the full forward pass's losses."""
    enc = encode_all(synth[0][:6], tok)
    cfg = WeightingConfig(prefixes=3)
    mod, _ = fit_weighting(enc, student, tok, WeightingConfig(steps=0))
    batch = collate_weighting(enc, tok.pad_token_id, cfg.prefixes, np.random.default_rng(0))
    outs = []
    for head_path in (True, False):
        mod._head_path = head_path
        out = mod(batch, cfg, 0.5, torch.Generator().manual_seed(0))
        outs.append((out["L_p"], out["loss"]))
    assert outs[0][0].item() == pytest.approx(outs[1][0].item(), rel=1e-5)
    assert outs[0][1].item() == pytest.approx(outs[1][1].item(), rel=1e-5)
    mod._head_path = None  # the first call checks the head path against the model's logits
    mod(batch, cfg, 0.5, torch.Generator().manual_seed(0))
    assert mod._head_path is True  # a Llama's logits are head(decoder(x))


def test_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y + np.round(rng.normal(size=300))  # ties included
    s = np.round(s, 1)
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError):
        auroc([0.1, 0.2], [1, 1])


def test_score_surrogate_is_an_unbiased_gradient_of_the_expected_answer_loss():
    """The score-function surrogate's gradient matches d E_m[L_p] / dw computed in closed form.

    Three rationale tokens, cuts after 1, 2 and 3 tokens; the loss of cut k may only depend on
    the tokens before it: L(cut) = 2 (1 - m_0) for every cut, plus 3 (1 - m_2) for the full cut.
    E[sum of cuts] = 6 (1 - w_0) + 3 (1 - w_2): gradient (-6, 0, -3).
    """
    g = torch.Generator().manual_seed(0)
    K = 40000
    w = torch.tensor([[0.6, 0.5, 0.3]], requires_grad=True)
    m = (torch.rand(K, 3, generator=g) < w.detach()).float()
    per_row = []
    for s in range(K):
        base = 2 * (1 - m[s, 0])
        per_row += [base, base, base + 3 * (1 - m[s, 2])]
    batch = {"cuts": [[1, 2, 3]] * K}
    r_valid = torch.ones(1, 3, dtype=torch.bool)
    sur = TokenWeighter._score_surrogate(w, m, r_valid, torch.stack(per_row), [], batch, K)
    (grad,) = torch.autograd.grad(sur, w)
    assert grad[0].tolist() == pytest.approx([-6.0, 0.0, -3.0], abs=0.25)


def test_rationale_worth_is_the_answer_nll_whole_rationales_save_per_token(synth, tok, student):
    """``rationale_worth`` = sum_i [L_p,i(all masked) - L_p,i(all kept)] / sum_i L_i, Eq. 5 over
    every prefix (``prefixes=0``), batched or one example at a time."""
    from kpod.weighting import rationale_worth

    enc = encode_all(synth[0][:6], tok)
    cfg = WeightingConfig(prefixes=0, batch_size=4, mlp_hidden=16)
    mod, _ = fit_weighting(enc, student, tok, WeightingConfig(steps=0, mlp_hidden=16))
    mod.eval()
    gain, tokens = 0.0, 0
    for e in enc:
        b = collate_weighting([e], tok.pad_token_id, 0, np.random.default_rng(0))
        keep = b["r_valid"].float()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            kept = mod(b, cfg, 0.0, g, mask=keep)["L_p"]
            masked = mod(b, cfg, 0.0, g, mask=torch.zeros_like(keep))["L_p"]
        gain += float(masked - kept)
        tokens += len(e.rationale_tokens)
    # float32 sums of ~100-nat losses with and without padding: agree to ~1e-6 per token
    assert rationale_worth(mod, enc, cfg, tok.pad_token_id) == pytest.approx(
        gain / tokens, abs=1e-5
    )


def test_relative_alpha_charges_alpha_times_the_measured_worth(synth, tok, student, monkeypatch):
    import kpod.weighting as kw

    enc = encode_all(synth[0][:16], tok)
    base = dict(steps=3, predictor_warmup=2, batch_size=4, mlp_hidden=16, warmup_steps=0)
    monkeypatch.setattr(kw, "rationale_worth", lambda *a, **k: 0.25)
    mod, hist = fit_weighting(enc, student, tok, WeightingConfig(alpha=0.5, **base))
    assert mod.calibration["worth_per_token"] == 0.25
    assert mod.calibration["alpha_per_token"] == pytest.approx(0.125)
    assert [h["alpha"] for h in hist] == [0.0, 0.0] + [pytest.approx(0.125)] * 3
    # a predictor that gains nothing from rationales: said loudly, the literal charge is used
    monkeypatch.setattr(kw, "rationale_worth", lambda *a, **k: -0.1)
    with pytest.warns(RuntimeWarning, match="gains nothing from whole rationales"):
        mod, hist = fit_weighting(enc, student, tok, WeightingConfig(alpha=0.5, **base))
    assert mod.calibration["alpha_per_token"] == 0.5 and hist[-1]["alpha"] == 0.5
    # alpha_scale="absolute": alpha nats per kept token, nothing measured
    monkeypatch.setattr(kw, "rationale_worth", lambda *a, **k: pytest.fail("measured"))
    mod, hist = fit_weighting(enc, student, tok, WeightingConfig(alpha_scale="absolute", **base))
    assert mod.calibration == {"alpha_scale": "absolute", "alpha_per_token": 0.5}
    assert hist[-1]["alpha"] == 0.5
    # no step of Eq. 7: nothing measured, no charge claimed
    mod, hist = fit_weighting(enc, student, tok, WeightingConfig(steps=0, mlp_hidden=16))
    assert mod.calibration == {"alpha_scale": "relative"} and hist == []


@pytest.mark.parametrize(
    "bad",
    [{"alpha_scale": "log"}, {"calibration_examples": 0}, {"warmup_keep": "half"}],
)
def test_weighting_config_refuses_bad_calibration_and_warmup_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        WeightingConfig(**bad)


def test_warmup_feeds_eq5_prefixes_at_every_mask_density(synth, tok, student, monkeypatch):
    """The predictor warm-up sees the prefixes Eq. 5 will ask about (not only whole
    rationales) and keep rates spread over (0, 1) (not only ``init_keep``)."""
    enc = encode_all(synth[0][:32], tok)
    seen = []
    orig = TokenWeighter.forward

    def spy(self, batch, cfg, alpha, generator, **kw):
        if kw.get("mask") is not None:
            m, v = kw["mask"], batch["r_valid"]
            seen.append(([len(c) for c in batch["cuts"]], (m.sum(1) / v.sum(1)).tolist()))
        return orig(self, batch, cfg, alpha, generator, **kw)

    monkeypatch.setattr(TokenWeighter, "forward", spy)
    cfg = WeightingConfig(steps=1, predictor_warmup=8, batch_size=8, mlp_hidden=16, prefixes=4)
    fit_weighting(enc, student, tok, cfg)
    warm = seen[:8]  # then the calibration passes
    assert all(n >= 2 for cuts, _ in warm for n in cuts)
    rates = [r for _, rs in warm for r in rs]
    assert min(rates) < 0.3 and max(rates) > 0.9
    seen.clear()
    old = WeightingConfig(**{**cfg.to_dict(), "warmup_keep": "init", "warmup_prefixes": False})
    fit_weighting(enc, student, tok, old)
    assert all(n == 1 for cuts, _ in seen[:8] for n in cuts)
