"""llmrec on antm2c: the AntM2C synthetic release (multi-scenario CTR logs with item titles)
becomes a multi-domain recommendation data set (scene = domain, clicks = interactions, item
titles = item texts), prepared by llmrec's pipeline and learned by LLM-Rec."""

import numpy as np
import pandas as pd
import pytest
import torch

antm2c_synth = pytest.importorskip("antm2c.synth")
llmrec = pytest.importorskip("llmrec")


def _antm2c_to_canonical(directory):
    from antm2c.schema import ITEM_TEXT, SCENE, TIME

    (part,) = sorted(directory.glob("antm2c_synth_part*"))
    raw = pd.read_csv(part, usecols=["user_id", "item_id", TIME, "label", ITEM_TEXT[1], SCENE])
    clicks = raw[raw["label"] == 1]
    ts = pd.to_datetime(clicks[TIME], format="%Y-%m-%d %H:%M:%S").astype("int64") // 10**9
    domain = "scene" + clicks[SCENE].astype(str)
    inter = pd.DataFrame(
        {
            "user": clicks["user_id"].astype(str),
            "item": clicks["item_id"].astype(str),
            "ts": ts.to_numpy(),
            "domain": domain.to_numpy(),
        }
    )
    items = pd.DataFrame(
        {
            "item": clicks["item_id"].astype(str).to_numpy(),
            "domain": domain.to_numpy(),
            "title": clicks[ITEM_TEXT[1]].to_numpy(),
        }
    ).drop_duplicates("item")
    return inter, items


def test_antm2c_scenes_as_llmrec_domains(tmp_path):
    torch.set_num_threads(1)
    cfg = antm2c_synth.SynthConfig(n_rows=30_000, n_users=300, n_items=300, n_categories=6, seed=0)
    antm2c_synth.generate(tmp_path, cfg, progress_bar=False)
    inter, items = _antm2c_to_canonical(tmp_path)
    data = llmrec.prepare([(inter, items)], llmrec.PrepConfig(kcore=3))
    assert len(data.domains) >= 2 and data.n_users > 50
    train = llmrec.build_examples(data, "train")
    valid = llmrec.build_examples(data, "valid")
    negs = llmrec.sample_eval_negatives(data, valid.users, valid.targets, 50)
    spec = llmrec.BackboneSpec("tiny-decoder", hidden=32, heads=2)
    model = llmrec.LLMRec(llmrec.build_backbone(spec, data.titles), data.titles)
    groups = {"all": np.ones(len(valid), dtype=bool)}
    before = llmrec.evaluate(model, data, valid, negatives=negs, groups=groups)["groups"]["all"]
    llmrec.fit(
        model, data, train, llmrec.TrainConfig(epochs=1, batch_size=32, max_steps=40, lr=3e-3)
    )
    after = llmrec.evaluate(model, data, valid, negatives=negs, groups=groups)["groups"]["all"]
    # every antm2c scene became an llmrec domain, and each item keeps the scene it was clicked in
    scenes = {f"scene{x}" for x in pd.read_csv(next(tmp_path.glob("antm2c_synth_part*")))["scene"]}
    assert set(data.domains) <= scenes
    first_scene = items.set_index("item")["domain"]
    for idx in range(1, data.n_items + 1, 7):
        assert data.domains[data.item_domain[idx]] == first_scene[data.item_ids[idx - 1]]
    assert (data.item_domain[negs[negs > 0]] >= 0).all()
    for m in (before, after):
        assert 0.0 <= m["recall@1"] <= m["recall@10"] <= 1.0 and m["n"] == len(valid)
    assert after != before  # training moved the model
