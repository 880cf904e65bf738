"""bahe composes with antm2c: BAHE trains on AntM2C-format data written by antm2c's generator.

antm2c writes the public release's CSV layout (header row, user text columns as behaviour
families); bahe reads that format itself (it does not depend on antm2c).
"""

import numpy as np
import pytest

antm2c = pytest.importorskip("antm2c")
bahe = pytest.importorskip("bahe")


def test_bahe_trains_on_antm2c_generated_data(tmp_path):
    import torch
    from bahe import (
        BAHECTR,
        BAHEConfig,
        SplitLM,
        TrainConfig,
        antm2c_data,
        build_store,
        evaluate,
        train,
    )
    from bahe.data import ANTM2C_FAMILIES

    from shared.lm import tiny_encoder, train_tokenizer

    torch.set_num_threads(1)
    antm2c.generate(tmp_path / "raw", antm2c.SynthConfig(n_rows=3000, n_users=200, n_items=150, seed=1),
                    progress_bar=False)  # fmt: skip
    tr = antm2c_data(tmp_path / "raw", split="train", max_behaviors=8)
    te = antm2c_data(tmp_path / "raw", split="test", max_behaviors=8, catalog=tr.catalog)
    assert tr.families == ANTM2C_FAMILIES and len(tr) > 1000 and len(te) > 100
    st = tr.stats()
    assert st["dedup_ratio"] > 10  # entity behaviours repeat across rows and users
    tok = train_tokenizer(tr.texts() + te.texts())
    model = tiny_encoder(tok, layers=3, hidden=32, heads=4, seed=0)
    lm = SplitLM(model, tok, 1, model_id="tiny-bert")
    store = build_store(tr.catalog, lm, tmp_path / "store")
    # every behaviour and title of both splits is in the store, each encoded once
    assert len(store) == len(tr.catalog)
    cfg = BAHEConfig(families=ANTM2C_FAMILIES, max_behaviors=8, id_features=("item_id", "scene"))
    m = BAHECTR(lm, store, cfg)
    sub = tr.subset(np.arange(0, len(tr), 3))
    before = evaluate(m, sub)["logloss"]
    res = train(m, tr, TrainConfig(steps=80, batch_size=32, lr=3e-3))
    assert all(np.isfinite(res.losses))
    assert evaluate(m, sub)["logloss"] < before  # it learns from the AntM2C rows
    metrics = evaluate(m, te)
    assert 0.0 <= metrics["auc"] <= 1.0 and metrics["rows"] == len(te)
