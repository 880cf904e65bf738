"""Issue 17: cross-scene shuffling, weighted metrics, dtype-aware logloss, one epochs default
with early stopping, progress in logs, small doc fixes."""

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from antm2c import (
    RAW_COLUMNS,
    FeatureEncoder,
    FeatureSpec,
    ParquetStream,
    TrainConfig,
    Trainer,
    auc,
    gauc,
    logloss,
    split_files,
)
from sklearn.metrics import log_loss, roc_auc_score


def _stream(root, **kw):
    files = split_files(root, "train")
    spec = FeatureSpec.preset("id")
    enc = FeatureEncoder.fit(files, spec)
    return ParquetStream(files, enc, **kw)


def test_shuffle_mixes_scenes_in_every_batch_whatever_the_buffer(prepared):
    root, _ = prepared
    st = _stream(root, batch_size=256, shuffle=True, buffer_rows=2048, seed=1)
    assert len(split_files(root, "train")) >= 5  # one file per scene at least
    batches = list(st)
    assert len(batches) == len(st)
    scenes = [b["scene"].numpy() for b in batches[:-1]]
    rows = np.concatenate([b["row"].numpy() for b in batches])
    assert len(rows) == len(np.unique(rows)) == st.num_rows  # each row once per epoch
    overall = np.bincount(np.concatenate(scenes), minlength=5) / sum(len(s) for s in scenes)
    single = np.mean([len(np.unique(s)) == 1 for s in scenes])
    assert single < 0.02, f"{single:.0%} of batches hold one scene"
    # the first tenth of the epoch already holds every scene in about its share
    head = np.concatenate(scenes[: max(1, len(scenes) // 10)])
    share = np.bincount(head, minlength=5) / len(head)
    assert np.abs(share - overall).max() < 0.08, (share, overall)
    # another epoch is another order; seeds repeat
    rows2 = np.concatenate([b["row"].numpy() for b in st])
    assert not np.array_equal(rows, rows2)
    st_b = _stream(root, batch_size=256, shuffle=True, buffer_rows=2048, seed=1)
    np.testing.assert_array_equal(rows, np.concatenate([b["row"].numpy() for b in st_b]))


def test_unshuffled_stream_keeps_file_order_and_has_a_length(prepared):
    root, _ = prepared
    st = _stream(root, batch_size=1000, shuffle=False)
    batches = list(st)
    assert len(batches) == len(st) == -(-st.num_rows // 1000)


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 3_000)
    p = np.round(rng.random(3_000), 2)
    w = rng.random(3_000) * 3
    assert auc(y, p, sample_weight=w) == pytest.approx(
        roc_auc_score(y, p, sample_weight=w), abs=1e-12
    )
    assert logloss(y, p, sample_weight=w) == pytest.approx(
        log_loss(y, p, sample_weight=w), rel=1e-12
    )
    # unit weights change nothing; zero weights drop rows
    assert auc(y, p, sample_weight=np.ones(3_000)) == pytest.approx(auc(y, p), abs=1e-12)
    keep = w > 1
    assert auc(y, p, sample_weight=np.where(keep, w, 0.0)) == pytest.approx(
        roc_auc_score(y[keep], p[keep], sample_weight=w[keep]), abs=1e-12
    )
    g = rng.integers(0, 40, 3_000)
    val, skipped = gauc(y, p, g, sample_weight=w)
    num = den = 0.0
    for u in np.unique(g):
        m = g == u
        if len(np.unique(y[m])) == 2:
            num += roc_auc_score(y[m], p[m], sample_weight=w[m]) * w[m].sum()
            den += w[m].sum()
    assert val == pytest.approx(num / den, abs=1e-12)
    assert 0 <= skipped < 1
    with pytest.raises(ValueError, match="sample_weight"):
        auc(y, p, sample_weight=w[:-1])
    with pytest.raises(ValueError, match="sample_weight"):
        auc(y, p, sample_weight=-w)


def test_logloss_eps_follows_the_input_dtype():
    y = np.array([1, 0, 1, 0, 1])
    for dt in (np.float32, np.float64):
        p = np.array([0.0, 1.0, 0.3, 0.0, 1.0], dtype=dt)
        assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-6), dt
    p32 = np.array([0.0, 1.0, 0.3, 0.0, 1.0], dtype=np.float32)
    assert logloss(y, p32) != pytest.approx(logloss(y, p32.astype(np.float64)), rel=1e-3)


def test_cli_epochs_default_is_the_train_config_default():
    from antm2c.__main__ import _parser

    a = _parser().parse_args(["train", "--data", "d", "--model", "lr", "--out", "o"])
    assert a.epochs == TrainConfig().epochs
    assert a.patience == TrainConfig().patience


def test_early_stopping_on_validation_auc_restores_the_best_epoch():
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.integers(0, 2, 400), dtype=torch.float32)
    good = y * 2 - 1 + torch.tensor(rng.normal(0, 1, 400), dtype=torch.float32)

    quality = iter([-1.0, 1.0, 0.0, -0.5, 1.0, 1.0, 1.0])  # sign of the score per epoch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)
            self.register_buffer("q", torch.zeros(()))

        def forward(self, b):
            return self.lin(b["x"]).squeeze(-1) * 0 + self.q * b["x"].squeeze(-1)

    m = M()

    class Train:
        def __iter__(self):
            m.q.fill_(next(quality))
            yield {"x": good[:, None], "label": y}

        def __len__(self):
            return 1

    def val_batches():
        n = len(y)
        keys = ("scene", "user", "item", "cold_user", "cold_item", "row")
        extra = {k: torch.zeros(n, dtype=torch.long) for k in keys}
        return [{"x": good[:, None], "label": y, **extra}]

    class Val:
        def __iter__(self):
            return iter(val_batches())

    tr = Trainer.__new__(Trainer)
    tr.model, tr.cfg, tr.device = m, TrainConfig(epochs=7, patience=1), torch.device("cpu")
    tr.opt_sparse = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    tr.opt_dense = torch.optim.SGD(m.parameters(), lr=0.0)
    tr.loss, tr.history = torch.nn.BCEWithLogitsLoss(), []
    hist = tr.fit(Train(), Val())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]  # two epochs without gain: stop
    assert float(m.q) == 1.0  # the best epoch's state is restored
    assert all("val_auc" in h for h in hist)


def test_small_doc_fixes():
    import antm2c.schema as schema

    assert f"{len(RAW_COLUMNS)} columns" in inspect.getdoc(schema)
    readme = Path(__file__).parents[1] / "README.md"
    assert "pip install" in readme.read_text()


def test_training_progress_reaches_piped_logs_with_a_total(prepared, monkeypatch, capsys):
    from antm2c import multi_scenario, run

    root, _ = prepared
    monkeypatch.delenv("PROGRESS", raising=False)
    task = multi_scenario(root, None, FeatureSpec.preset("id"))
    res = run(task, "lr", TrainConfig(epochs=1, batch_size=512))
    err = capsys.readouterr().err
    enc = FeatureEncoder.fit(task.files("train"), task.spec)
    n = len(task.streams(enc, batch_size=512)[0])
    assert res.history[0]["epoch"] == 1
    assert f"multi/lr epoch 1/1: done {n}/{n} batch (100%)" in err, err
