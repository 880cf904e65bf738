"""Optional back-ends: the two-node emulation (root + iproute2) and DeepSpeed (extra)."""

from __future__ import annotations

import pytest
import torch
from paro.deepspeed_baseline import availability as ds_availability
from paro.emulation import EmulationConfig, availability, run_emulated


def test_emulation_config_errors():
    with pytest.raises(ValueError, match="ranks_per_node"):
        EmulationConfig(ranks_per_node=0)
    with pytest.raises(ValueError, match="rate_mbit"):
        EmulationConfig(rate_mbit=0)
    with pytest.raises(ValueError, match="job must be one of"):
        run_emulated("nope", {}, EmulationConfig())


@pytest.mark.slow
def test_emulated_horing_crosses_fewer_bytes():
    ok, why = availability()
    if not ok:
        pytest.skip(f"two-node emulation unavailable: {why}")
    numel = 256 * 1024
    res = run_emulated("allreduce", {"numel": numel, "repeats": 1}, EmulationConfig(2, 400.0, 180))
    for r in res:
        assert all(r["correct"].values()), r["correct"]
    link = res[0]["link_tx_bytes"]
    # 2 nodes x 2 ranks: HO-Ring sends S across, the flat ring 1.5 S (plus TCP/IP overhead)
    s = 4 * numel
    assert s <= link["horing"] < 1.15 * s
    assert 1.5 * s <= link["flat_ring"] < 1.15 * 1.5 * s


@pytest.mark.slow
def test_deepspeed_zero_stages_match_engine():
    ok, why = ds_availability()
    if not ok:
        pytest.skip(why)
    from paro.deepspeed_baseline import compare_with_deepspeed

    res = compare_with_deepspeed(steps=2)
    for stage, rel in res["rel_diff"].items():
        assert rel <= 1e-5, (stage, rel)
    assert torch.tensor(list(res["rel_diff"].values())).isfinite().all()


def test_bench_reports_unavailable_backends_as_unmeasured(monkeypatch):
    from paro import bench, deepspeed_baseline

    monkeypatch.setattr(bench, "availability", lambda: (False, "needs root (test)"))
    claims = bench._emulation_claims(quick=True)
    assert {c.name for c in claims} == {
        "horing_time_ratio",
        "horing_inter_bytes",
        "reduce_scatter_inter_bytes",
        "nig_vs_zero3_throughput",
        "per_layer_overlap_speedup",
    }
    for c in claims:
        assert c.measured is None and c.holds is False
        assert c.details["reason"] == "needs root (test)"
    monkeypatch.setattr(deepspeed_baseline, "availability", lambda: (False, "no deepspeed (test)"))
    c = bench._deepspeed_claim(quick=True)
    assert c.measured is None and c.holds is False and "no deepspeed" in c.details["reason"]
