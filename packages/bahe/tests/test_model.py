import numpy as np
import pytest
import torch
from bahe.baseline import NaiveConfig, NaiveCTR
from bahe.measure import bert_forward_flops, count_flops, saved_activation_bytes
from bahe.metrics import auc, gauc, logloss
from bahe.model import BAHECTR, BAHEConfig
from bahe.store import build_store
from bahe.train import TrainConfig, evaluate, load_checkpoint, save_checkpoint, train
from conftest import FAMILIES, make_lm


@pytest.fixture(scope="module")
def bahe_setup(tmp_path_factory, synth, tok):
    train_d, _test_d, _ = synth
    lm = make_lm(tok)
    store = build_store(train_d.catalog, lm, tmp_path_factory.mktemp("m") / "s")
    return lm, store


def test_bahe_trains_and_checkpoints(bahe_setup, synth, tmp_path):
    lm, store = bahe_setup
    train_d, test_d, _ = synth
    m = BAHECTR(lm, store, BAHEConfig(families=FAMILIES, max_behaviors=5))
    res = train(m, train_d, TrainConfig(steps=30, batch_size=32, lr=3e-3))
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
    assert all(np.isfinite(res.losses))
    p = save_checkpoint(m, tmp_path / "ck.pt", meta={"steps": 30})
    before = evaluate(m, test_d)
    m2 = BAHECTR(make_lm(m.lm.tokenizer), store, BAHEConfig(families=FAMILIES, max_behaviors=5))
    assert load_checkpoint(m2, p) == {"steps": 30}
    after = evaluate(m2, test_d)
    assert after["auc"] == pytest.approx(before["auc"], abs=1e-9)
    # a damaged checkpoint is refused with a clear error
    (tmp_path / "bad.pt").write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(m2, tmp_path / "bad.pt")
    naive = NaiveCTR(make_lm(m.lm.tokenizer), NaiveConfig(families=FAMILIES))
    with pytest.raises(ValueError, match="bahe model"):
        load_checkpoint(naive, p)


def test_bahe_refuses_missing_behaviours(bahe_setup, synth):
    lm, store = bahe_setup
    _, test_d, _ = synth
    import pyarrow as pa
    from bahe.data import CTRData

    t = pa.table(
        {"label": [1], "item_title": ["brand new title"], "bill": [["never seen"]], "search": [[]]}
    )
    d = CTRData.from_table(t, FAMILIES, catalog=test_d.catalog)
    m = BAHECTR(lm, store, BAHEConfig(families=FAMILIES, max_behaviors=5))
    with pytest.raises(KeyError, match="not in the behaviour store"):
        m.featurize(d, np.arange(1))
    mz = BAHECTR(lm, store, BAHEConfig(families=FAMILIES, max_behaviors=5, missing="zero"))
    mz.eval()
    with torch.no_grad():
        logit = mz(mz.featurize(d, np.arange(1)))
    assert torch.isfinite(logit).all()  # an empty family ("search") does not give NaN


def test_naive_baseline_forward_and_modes(synth, tok):
    train_d, _, _ = synth
    idx = np.arange(4)
    full = NaiveCTR(make_lm(tok), NaiveConfig(families=FAMILIES, train_lower=True))
    frozen = NaiveCTR(make_lm(tok), NaiveConfig(families=FAMILIES, train_lower=False))
    b = full.featurize(train_d, idx)
    # every behaviour's tokens + one separator each, all families in one sequence
    n_tok = sum(int(train_d.lengths[f][0]) for f in FAMILIES)
    assert int(b["attention_mask"][0].sum()) > n_tok
    assert set(b["segments"][0].unique().tolist()) <= {-1, 0, 1}
    n_full = sum(p.numel() for p in full.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in frozen.parameters() if p.requires_grad)
    assert n_full > n_frozen
    res = train(frozen, train_d, TrainConfig(steps=3, batch_size=8))
    assert len(res.losses) == 3 and all(np.isfinite(res.losses))


def test_flop_counter_is_exact_with_eager_and_refuses_sdpa(tok):
    lm = make_lm(tok, "bert", num_lower=2, layers=4, attn="eager")
    ids = torch.randint(7, 50, (2, 12))
    mask = torch.ones_like(ids)
    got = count_flops(lambda: lm.lower_hidden(ids, mask), lm.full)
    cfg = lm.full.config
    assert got == bert_forward_flops(2, 2, 12, cfg.hidden_size, cfg.intermediate_size)
    sdpa = make_lm(tok, "bert", num_lower=2, layers=4, attn="sdpa")
    with pytest.raises(ValueError, match="eager"):
        count_flops(lambda: sdpa.lower_hidden(ids, mask), sdpa.full)
    # the trap itself: SDPA attention FLOPs are missed on CPU
    missed = count_flops(lambda: sdpa.lower_hidden(ids, mask), sdpa.full, allow_sdpa=True)
    assert missed < got


def test_bahe_step_is_cheaper_than_naive(bahe_setup, synth, tok, tmp_path):
    train_d, _, _ = synth
    lm_e = make_lm(tok, attn="eager")
    store = build_store(train_d.catalog, lm_e, tmp_path / "s")
    bahe = BAHECTR(lm_e, store, BAHEConfig(families=FAMILIES, max_behaviors=5))
    naive = NaiveCTR(make_lm(tok, attn="eager"), NaiveConfig(families=FAMILIES))
    idx = np.arange(8)

    def step(m):
        b = m.featurize(train_d, idx)
        return lambda: torch.nn.functional.binary_cross_entropy_with_logits(
            m(b), b["labels"]
        ).backward()

    fb, fn = count_flops(step(bahe), bahe), count_flops(step(naive), naive)
    ab, an = saved_activation_bytes(step(bahe), bahe), saved_activation_bytes(step(naive), naive)
    assert fn > 3 * fb and an > 2 * ab


def test_metrics_against_sklearn():
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500), 2)  # ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert logloss(y, s) == pytest.approx(log_loss(y, np.clip(s, 1e-7, 1 - 1e-7)), abs=1e-9)
    assert np.isnan(auc(np.ones(3), np.arange(3)))
    g, skipped = gauc(
        np.array([1, 0, 1, 1, 0, 1]),
        np.array([0.9, 0.1, 0.2, 0.5, 0.6, 0.3]),
        np.array([0, 0, 1, 1, 1, 2]),
    )
    assert g == pytest.approx((2 * 1.0 + 3 * 0.0) / 5) and skipped == pytest.approx(1 / 6)


def test_configs_validate():
    with pytest.raises(ValueError, match="families"):
        BAHEConfig(families=())
    with pytest.raises(ValueError, match="user_pool"):
        BAHEConfig(families=("a",), user_pool="max")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="max_tokens"):
        NaiveConfig(families=("a",), max_tokens=0)


def test_batch_size_must_divide_world(bahe_setup, synth):
    lm, store = bahe_setup
    train_d, _, _ = synth
    m = BAHECTR(lm, store, BAHEConfig(families=FAMILIES, max_behaviors=5))
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(m, train_d.subset(np.arange(4)), TrainConfig(batch_size=8))
