"""The claim arithmetic of the bench, on hand-made per-seed results (no training)."""

import numpy as np
import pytest
from otgnet.bench import _claims, settings
from otgnet.experiments import aggregate


def _result(system: str, seed: int, ap: float, af: float, tag: str = "", gate=(80.0,)) -> dict:
    acc = np.full((3, 3), np.nan)
    acc[2] = ap
    return {
        "system": system,
        "seed": seed,
        "tag": tag,
        "ap": ap,
        "af": af,
        "acc": acc.tolist(),
        "events_per_s": 100.0,
        "buffer_edges": [40, 70 + seed, 70 + seed],
        "gate_acc": list(gate) if system.startswith("otgnet") else [],
    }


def test_claims_from_hand_results():
    st = settings(quick=True)
    aps = {  # per seed
        "otgnet": [60, 62],
        "otgnet_no_ib": [58, 57],
        "otgnet_random_triads": [55, 59],
        "otgnet_random_edges": [61, 60],
        "tgn_ft": [30, 40],
    }
    res = [
        _result(s, i, ap, af=10.0 if s != "tgn_ft" else 60.0)
        for s, v in aps.items()
        for i, ap in enumerate(v)
    ]
    res += [_result("otgnet", i, 50 + i, 5.0, "low_h", (95.0, 85.0)) for i in range(2)]
    res += [_result("otgnet_no_ib", i, 52 - i, 5.0, "low_h") for i in range(2)]
    agg = aggregate(res)
    timing = {"ratio": 0.5}
    claims = {c.name: c for c in _claims(agg, res, timing, st)}
    ap = claims["ap_vs_tgn_ft"]
    assert (ap.measured, ap.baseline, ap.target) == (61.0, 35.0, 35.0) and ap.holds
    af = claims["af_vs_tgn_ft"]
    assert af.comparator == "<=" and af.measured == 10.0 and af.holds
    assert af.details["paired_diff"]["per_seed"] == [-50.0, -50.0]
    assert af.details["paired_diff"]["wins"] == 2 == ap.details["paired_diff"]["wins"]
    ib = claims["ib_gain_grows_with_heterophily"]
    # gains: high (60-58, 62-57) = (2, 5); low (50-52, 51-51) = (-2, 0): 3.5 - (-1) = 4.5
    assert ib.measured == pytest.approx(4.5) and ib.baseline == pytest.approx(-1.0) and ib.holds
    assert ib.details["gate_acc_low"] == pytest.approx(90.0)
    assert ib.details["no_ib_ap_low"] == pytest.approx(51.5)
    tr = claims["triad_vs_random_replay"]
    assert tr.measured == 61.0 and tr.target == 60.5 and tr.holds
    assert tr.details["paired_diff"]["per_seed"] == [-1.0, 2.0]
    assert tr.details["buffer_events"] == pytest.approx(70.5)
    assert claims["train_events_per_s_ratio"].measured == 0.5
    # a losing system is reported as not holding, with its number
    res2 = [r if r["system"] != "otgnet_random_edges" else {**r, "ap": 90.0} for r in res]
    tr2 = {c.name: c for c in _claims(aggregate(res2), res2, timing, st)}["triad_vs_random_replay"]
    assert not tr2.holds and tr2.baseline == 90.0


def test_full_bench_jobs_and_oracle_gate_details():
    from otgnet.bench import _jobs

    st = settings(quick=False)
    jobs = _jobs(st)
    low = {j.system for j in jobs if j.tag == "low_h"}
    assert low == {"otgnet", "otgnet_no_ib", "otgnet_oracle_gate"}
    assert {j.synthetic.heterophily for j in jobs if j.tag == "low_h"} == {st.low_heterophily}
    assert len({j.seed for j in jobs}) == st.seeds >= 5
    quick = _jobs(settings(quick=True))
    assert "otgnet_oracle_gate" not in {j.system for j in quick}
    res = [_result(s, i, 50.0 + i, 10.0) for s in ("otgnet", "otgnet_no_ib") for i in range(2)]
    res += [_result("otgnet_oracle_gate", i, 60.0, 10.0) for i in range(2)]
    res += [_result(s, i, 50.0, 10.0, "low_h") for s in ("otgnet_no_ib",) for i in range(2)]
    res += [_result("otgnet_oracle_gate", i, 52.0, 10.0, "low_h") for i in range(2)]
    from otgnet.bench import _oracle_gate_gains

    d = _oracle_gate_gains(res, aggregate(res))
    # high: 60 - (50, 51) = (10, 9); low: 52 - 50 = 2
    assert d["oracle_gate_difference"] == pytest.approx(7.5)
    assert _oracle_gate_gains(res[:4], aggregate(res[:4])) == {}


def test_bench_graphs_and_older_partner_comparison():
    from otgnet.bench import _jobs, _older_partner_gains, bench_claims

    for quick in (True, False):
        st = settings(quick)
        # the claims' graphs: partner classes uniform, the budget a fraction of a class
        assert st.synthetic.hetero_partner == "uniform" and st.synthetic.nodes_per_class >= 150
    jobs = _jobs(settings(quick=False))
    older = [j for j in jobs if j.tag.startswith("older")]
    assert {j.synthetic.hetero_partner for j in older} == {"older"}
    assert {(j.tag, j.synthetic.heterophily) for j in older} == {
        ("older_h", 0.5),
        ("older_low_h", 0.1),
    }
    assert not any(j.tag.startswith("older") for j in _jobs(settings(quick=True)))
    res = [
        _result(s, i, 50.0 + i, 10.0, "older_h")
        for s in ("otgnet", "otgnet_no_ib")
        for i in range(2)
    ]
    res += [_result("otgnet", i, 40.0, 10.0, "older_low_h") for i in range(2)]
    res += [_result("otgnet_no_ib", i, 44.0, 10.0, "older_low_h") for i in range(2)]
    d = _older_partner_gains(res, aggregate(res))
    # high: 0; low: -4 -> +4
    assert d["older_partners_difference"] == pytest.approx(4.0)
    assert d["older_partners_no_ib_ap_low"] == 44.0
    assert _older_partner_gains(res[:4], aggregate(res[:4])) == {}
    with pytest.raises(ValueError, match="seeds"):
        bench_claims(True, seeds=1)
