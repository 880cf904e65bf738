"""Cost model (paper §3.3-3.4), planner rules (§3.6) and configuration errors; no processes."""

from __future__ import annotations

import pytest
from paro.cost import ModelStates, comm_plan, comm_volume, estimate_step, memory, padded
from paro.planner import choose, format_table, plan
from paro.strategy import PAPER_STRATEGIES, SUPPORTED, Strategy
from paro.topology import Links, Topology

GB = 1e9
PAPER_BASELINES = ("NNN", "NGG", "GGG", "III", "NII", "NIG", "IIG", "IGG", "ING")  # no ZeRO-1


def test_strategy_parse_and_aliases():
    assert Strategy.parse("nig") == Strategy("N", "I", "G")
    assert Strategy.parse("ZeRO-3").name == "GGG"
    assert Strategy.parse("DDP").name == "NNN"
    assert Strategy.parse("HSDP").name == "III"
    assert Strategy.parse("NNG").system == "ZeRO-1"
    assert len(SUPPORTED) == 14
    assert set(PAPER_STRATEGIES) <= set(SUPPORTED)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("NGN", "at least as finely"),
        ("XYZ", "must be one of N"),
        ("NI", "three letters"),
        ("GIN", "at least"),
    ],
)
def test_bad_strategy_is_rejected_with_reason(spec, match):
    with pytest.raises(ValueError, match=match):
        Strategy.parse(spec)
    with pytest.raises(TypeError, match="string"):
        Strategy.parse(3)


def test_bad_topology_and_links():
    with pytest.raises(ValueError, match="does not divide world_size=8"):
        Topology(8, 3)
    with pytest.raises(ValueError, match="positive integer"):
        Topology(0, 1)
    with pytest.raises(ValueError, match="bw_inter"):
        Links(1e9, 0)
    with pytest.raises(ValueError, match="numel"):
        ModelStates(0)
    t = Topology(8, 4)
    assert (t.g, t.group_of(5), t.local_rank(5), t.inter_ranks(5)) == (2, 1, 1, (1, 5))
    with pytest.raises(ValueError, match="outside"):
        t.group_of(8)


@pytest.mark.parametrize(
    ("params", "n", "expected"),
    [
        # dossier §3.3 worked table (GB = 1e9 B), LLaMA-7B (6.74e9) n=32 m=8 and 65B (65.2e9) n=64
        (
            6.74e9,
            32,
            {
                "NNN": 107.8,
                "NNG": 29.5,
                "NGG": 16.4,
                "NII": 25.3,
                "NIG": 17.7,
                "III": 13.5,
                "IIG": 5.9,
                "IGG": 4.6,
                "ING": 17.7,
                "GGG": 3.4,
            },
        ),
        (
            65.2e9,
            64,
            {
                "NNN": 1043,
                "NNG": 273,
                "NIG": 159,
                "III": 130,
                "IIG": 44.8,
                "IGG": 30.6,
                "GGG": 16.3,
            },
        ),
    ],
)
def test_memory_matches_paper_accounting(params, n, expected):
    states = ModelStates.mixed_precision(params)
    topo = Topology(n, 8)
    for name, gb in expected.items():
        got = memory(name, topo, states).total / GB
        assert got == pytest.approx(gb, rel=0.01, abs=0.06), name


def test_memory_counts_padding_exactly():
    states = ModelStates(numel=130, frozen_numel=96, param_bytes=4, grad_bytes=4, os_bytes=8)
    topo = Topology(4, 2)
    m = memory("IIG", topo, states)
    assert padded(130, 4) == 132
    assert (m.params, m.grads, m.optimizer_states) == (
        (132 + 96) * 4 // 2,
        132 * 4 // 2,
        132 * 8 // 4,
    )


def test_comm_volume_closed_forms():
    topo = Topology(8, 4)  # n=8, m=4, g=2
    st = ModelStates(numel=800, param_bytes=2, grad_bytes=2)
    S = 1600  # bytes of the full gradient / parameters
    a = 3
    nig = comm_volume("NIG", topo, st, a)
    # per micro-step intra RS (m-1)/m S; at the boundary inter RS + inter AG of S/m; then intra AG
    assert nig.inter == 2 * (1 * S // 4 // 2)
    assert nig.intra == a * 3 * S // 4 + 3 * S // 4
    iig = comm_volume("IIG", topo, st, a)
    assert iig.inter == nig.inter  # crosses groups once per step with 1/m of the volume
    assert iig.intra == a * (2 * 3 * S // 4 + 3 * S // 4)
    # III moves exactly the bytes of IIG (RS + AG = AR) but keeps 4x more optimizer state
    assert comm_volume("III", topo, st, a).total == iig.total
    assert memory("III", topo, st).optimizer_states == 2 * memory("IIG", topo, st).optimizer_states
    # ZeRO-3's inter-group traffic grows with accumulation, NIG's does not
    g1, g4 = comm_volume("GGG", topo, st, 1), comm_volume("GGG", topo, st, 4)
    assert g4.inter == 4 * g1.inter
    assert comm_volume("NIG", topo, st, 4).inter == comm_volume("NIG", topo, st, 1).inter
    flat = comm_volume("GGG", topo, st, 1, global_comm="flat")
    assert flat.intra == flat.inter == 0 and flat.global_ == 3 * 7 * S // 8
    assert comm_volume("NNN", topo, st, 2).inter == 2 * 1 * S // 4 // 2
    assert all(op.phase in ("param", "grad", "syncg", "syncp") for op in comm_plan("IGG", topo, st))


def test_step_estimate_terms():
    topo = Topology(4, 2)
    st = ModelStates(numel=1000, param_bytes=4, grad_bytes=4)
    links = Links(bw_intra=1e9, bw_inter=1e8)
    e = estimate_step("NIG", topo, st, links, 2, compute_s=0.5)
    assert e.compute == 1.0 and e.t_param == 0.0
    assert e.t_gradient == pytest.approx(2 * (4000 / 2) / 1e9)
    assert e.t_syncg == pytest.approx((4000 / 2 / 2) / 1e8)
    shared = estimate_step("NIG", topo, st, Links(1e9, 1e8, inter_shared=True), 2)
    assert shared.t_syncg == pytest.approx(2 * e.t_syncg)
    with pytest.raises(ValueError, match="global_comm"):
        comm_plan("NIG", topo, st, global_comm="tree")
    with pytest.raises(ValueError, match="accum_steps"):
        comm_plan("NIG", topo, st, accum_steps=0)


LINKS = Links(bw_intra=150e9, bw_inter=12.5e9)


def test_planner_reproduces_paper_choices():
    # 7B on 32 GPUs: NIG when it fits (paper's baselines, no ZeRO-1)
    r = choose(
        ModelStates.mixed_precision(6.74e9),
        Topology(32, 8),
        LINKS,
        80 * GB,
        4,
        candidates=PAPER_BASELINES,
    )
    assert r.strategy.name == "NIG"
    # 65B on 64 GPUs: NIG does not fit, IIG wins
    rows = plan(ModelStates.mixed_precision(65.2e9), Topology(64, 8), LINKS, 80 * GB, 4)
    assert rows[0].strategy.name == "IIG"
    assert not next(x for x in rows if x.strategy.name == "NIG").fits
    # 65B PEFT (trainable 3/1000): ING
    r = choose(ModelStates.mixed_precision(65.2e9, 0.003), Topology(64, 8), LINKS, 80 * GB, 4)
    assert r.strategy.name == "ING"
    # tighter memory: IGG, then ZeRO-3
    assert (
        choose(
            ModelStates.mixed_precision(65.2e9), Topology(64, 8), LINKS, 40 * GB, 4
        ).strategy.name
        == "IGG"
    )
    assert (
        choose(
            ModelStates.mixed_precision(65.2e9), Topology(64, 8), LINKS, 20 * GB, 4
        ).strategy.name
        == "GGG"
    )
    assert "NIG" in format_table(rows)


def test_planner_errors():
    st = ModelStates.mixed_precision(65.2e9)
    with pytest.raises(ValueError, match="no candidate strategy fits"):
        choose(st, Topology(64, 8), LINKS, 1 * GB)
    with pytest.raises(ValueError, match="memory_limit"):
        plan(st, Topology(64, 8), LINKS, 0)
    with pytest.raises(ValueError, match="three letters"):
        plan(st, Topology(64, 8), LINKS, 80 * GB, candidates=("ZZ",))
