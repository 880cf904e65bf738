"""rlhf-place with paro: the placement cost model's per-group ZeRO memory is PaRO's Mem(p, g, os)
for the equivalent strategies (ZeRO-0/1/2/3 = NNN/NNG/NGG/GGG) on that group, and PaRO's planner
can pick the strategy inside a group the RLHF planner sized."""

import pytest

paro = pytest.importorskip("paro")
rlhf = pytest.importorskip("rlhf_place")

from rlhf_place.cost import PlanSpec, Workload, _train_state_bytes, estimate  # noqa: E402
from rlhf_place.simulator import A100_CLUSTER, LLAMA  # noqa: E402

ZERO_TO_PARO = {0: "NNN", 1: "NNG", 2: "NGG", 3: "GGG"}


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("group", [1, 4, 8, 16])
def test_group_memory_equals_paro(stage, group):
    psi = 6_740_000_000 // 16 * 16  # a multiple of every group size: no padding
    ours = _train_state_bytes(psi, stage, group)
    theirs = paro.memory(
        ZERO_TO_PARO[stage], paro.Topology(group, group), paro.ModelStates.mixed_precision(psi)
    ).total
    assert ours == theirs


def test_interleaving_groups_fit_where_paro_says():
    """Interleaving 7B/7B on 16 GPUs: each 8-GPU group's training state matches PaRO's ZeRO-3
    accounting, and PaRO's planner finds a strategy for the actor group within 80 GB."""
    w = Workload(actor=LLAMA["7b"], critic=LLAMA["7b"], batch=256, prompt_len=256, gen_len=256)
    cost = estimate(PlanSpec("interleave", 8, 3, 3, "hybrid", 1, 4), w, A100_CLUSTER, 16)
    states = paro.ModelStates.mixed_precision(int(LLAMA["7b"].params))
    ggg = paro.memory("GGG", paro.Topology(8, 8), states).total
    assert cost.memory["A"] > ggg  # the group also holds the reference, activations, KV cache
    best = paro.choose(
        states, paro.Topology(8, 8), paro.Links(250e9, 25e9), 80e9 - (cost.memory["A"] - ggg), 1
    )
    assert best.fits
