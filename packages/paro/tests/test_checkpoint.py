"""Checkpoints (issue 16): sharded per rank and consolidated full, atomic, torch.load-able; resume
equals the uninterrupted run (bit-equal under the same strategy and world size on float64), and
loads into another strategy and another world size (resharding)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from paro.checkpoint import CheckpointError, consolidate, read_meta


@pytest.fixture
def runs(ckpt_dirs, engine_results, reshard_results):
    return ckpt_dirs[0], [r["ckpt"] for r in engine_results], reshard_results


def test_resume_same_strategy_is_bit_equal(runs):
    _, first, _ = runs
    for r in first:
        how, params, steps = r["resumed"]["NIG"]
        assert how == "sharded" and steps == 4
        assert torch.equal(params, r["final"])
        assert torch.equal(r["final"], first[0]["final"])


def test_resume_under_other_strategy_and_world_size(runs):
    _, first, second = runs
    final = first[0]["final"]
    for r in first:
        how, params, _ = r["resumed"]["IIG"]
        assert how == "full"
        torch.testing.assert_close(params, final, rtol=1e-12, atol=1e-12)
        how, params, _ = r["resumed"]["GGG"]
        assert how == "consolidated"
        torch.testing.assert_close(params, final, rtol=1e-12, atol=1e-12)
        assert r["plain_equal"]
    for r in second:  # 4 ranks (2 groups) -> 2 ranks (1 group), same global batch
        assert r["how"] == "consolidated"
        torch.testing.assert_close(r["final"], final, rtol=1e-12, atol=1e-12)


def test_files_load_with_torch_and_consolidate_offline(runs):
    base, _, _ = runs
    meta = read_meta(base / "full")
    assert meta["world_size"] == 4 and meta["strategy"] == "NIG" and meta["full"]
    shards = [
        torch.load(base / "full" / f"rank{r:05d}-of-00004.pt", weights_only=True) for r in range(4)
    ]
    full = torch.load(base / "full" / "full.pt", weights_only=True)
    cons = consolidate(list(reversed(shards)))
    assert cons["model"].keys() == full["model"].keys()
    for k in full["model"]:
        assert torch.equal(cons["model"][k], full["model"][k]), k
    for name, st in full["optimizer"]["state"].items():
        for key, t in st.items():
            assert torch.equal(cons["optimizer"]["state"][name][key], t), (name, key)
    assert set(full["optimizer"]["state"]["0.weight"]) == {"exp_avg", "exp_avg_sq"}
    with pytest.raises(CheckpointError, match=r"ranks 0\.\.3"):
        consolidate(shards[:3])
    # paro 0.2.0's sharded files (version 1: one trainable / frozen buffer at the top level)
    assert all(sd["version"] == 2 and len(sd["units"]) == 1 for sd in shards)
    old = []
    for sd in shards:
        v1 = {k: v for k, v in sd.items() if k != "units"}
        v1.update(version=1, trainable=sd["units"][0]["trainable"], frozen=None)
        v1["optimizer"] = dict(sd["optimizer"], state=sd["optimizer"]["state"][0])
        old.append(v1)
    cons1 = consolidate(old)
    for k in full["model"]:
        assert torch.equal(cons1["model"][k], full["model"][k]), k
    for name, st in full["optimizer"]["state"].items():
        for key, t in st.items():
            assert torch.equal(cons1["optimizer"]["state"][name][key], t), (name, key)


def test_bad_checkpoints_get_clear_errors(runs, tmp_path):
    base, _, _ = runs
    bad = tmp_path / "bad"
    shutil.copytree(base / "sharded", bad)
    with pytest.raises(CheckpointError, match="is missing"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_meta(tmp_path)
    from paro.checkpoint import _torch_load

    path = bad / "rank00001-of-00004.pt"
    path.write_bytes(path.read_bytes()[:100])  # truncated file
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        _torch_load(path)
    meta = json.loads((bad / "meta.json").read_text())
    assert meta["checkpoint_id"] and not meta["full"]
    with pytest.raises(CheckpointError, match="not a paro checkpoint"):
        consolidate([{"format": "something"}])
