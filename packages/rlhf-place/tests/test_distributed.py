"""Placements executed for real: processes over gloo (2 ranks in the fast suite, 4 in slow tests).

One spawn runs every placement (interleaved in the same processes) so the fast suite pays the
process start-up once.
"""

import pytest
import torch
from rlhf_place.config import RLHFConfig
from rlhf_place.launch import run_placements, train
from rlhf_place.placement import Placement
from rlhf_place.runtime import RunOptions

CFG = RLHFConfig(batch_size=8, gen_len=6, iterations=2)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _assert_same_trajectory(res, base, tol=1e-5):
    assert res.response_hashes == base.response_hashes  # the same sampled tokens
    assert res.score_mean == base.score_mean
    for it in range(len(base.actor_loss)):
        assert res.actor_loss[it] == pytest.approx(base.actor_loss[it], rel=1e-4, abs=1e-6)
        assert res.critic_loss[it] == pytest.approx(base.critic_loss[it], rel=1e-4, abs=1e-6)
    for role in ("actor", "critic"):
        assert _rel(res.final_params[role], base.final_params[role]) <= tol


@pytest.fixture(scope="module")
def two_ranks():
    jobs = [
        (Placement.flatten(2), RunOptions()),
        (Placement.interleave(2), RunOptions()),
        (Placement.separate(2), RunOptions()),
        (Placement.flatten(2), RunOptions(engine="fsdp2")),
    ]
    (results,) = run_placements(CFG, jobs, timeout_s=900)
    return dict(zip(["flatten", "interleave", "separate", "flatten_fsdp2"], results, strict=True))


def test_every_strategy_matches_flattening(two_ranks):
    base = two_ranks["flatten"]
    assert base.final_params["actor"].numel() > 10_000
    # training moved the weights: the comparison is not between two untouched initialisations
    assert base.actor_loss[0] != base.actor_loss[1]
    for name in ("interleave", "separate", "flatten_fsdp2"):
        _assert_same_trajectory(two_ranks[name], base)


def test_separation_syncs_weights_every_iteration(two_ranks):
    sep = two_ranks["separate"]
    n_actor = sep.final_params["actor"].numel()
    # one fp32 broadcast of the whole actor per iteration, counted by sender and receiver
    assert sep.comm_bytes["weight_sync"] == CFG.iterations * 2 * 4 * n_actor
    assert two_ranks["flatten"].comm_bytes["weight_sync"] == 0
    assert two_ranks["interleave"].comm_bytes["weight_sync"] == 0
    # the generation device holds the shadow actor only
    assert set(sep.memory[1]) == {"generator"}
    assert sep.memory[1]["generator"]["params"] == 4 * n_actor


def test_memory_per_role_and_rank(two_ranks):
    n_actor = two_ranks["flatten"].final_params["actor"].numel()
    n_critic = two_ranks["flatten"].final_params["critic"].numel()
    ddp = two_ranks["flatten"].memory
    for rank in (0, 1):  # DDP: full replicas of every model, Adam: 2 states per parameter
        assert ddp[rank]["actor"] == {
            "params": 4 * n_actor,
            "grads": 4 * n_actor,
            "optimizer": 8 * n_actor,
        }
        assert ddp[rank]["critic"]["params"] == 4 * n_critic
        assert set(ddp[rank]) == {"actor", "ref", "critic"}  # the rule reward has no weights
    fsdp = two_ranks["flatten_fsdp2"].memory
    # FSDP2: each rank holds a shard; the shards add up to the model exactly
    assert sum(fsdp[r]["actor"]["params"] for r in (0, 1)) == 4 * n_actor
    assert sum(fsdp[r]["actor"]["optimizer"] for r in (0, 1)) == 8 * n_actor
    assert all(fsdp[r]["actor"]["params"] < 0.6 * 4 * n_actor for r in (0, 1))
    inter = two_ranks["interleave"].memory
    assert set(inter[0]) == {"actor", "ref"} and set(inter[1]) == {"critic"}


def test_timelines_cover_every_stage(two_ranks):
    sep = two_ranks["separate"].timelines[0]
    stages0 = {s for s, _, _ in sep[0]}
    stages1 = {s for s, _, _ in sep[1]}
    assert {"sync", "infer", "train", "exchange"} <= stages0 and "generate" not in stages0
    assert {"sync", "generate", "exchange"} <= stages1 and "train" not in stages1
    for events in sep:
        assert all(0 <= s <= e for _, s, e in events)


def test_wrong_world_size_is_an_error():
    from rlhf_place.runtime import run_rank

    from shared import SpawnError, spawn

    with pytest.raises(SpawnError, match="placement is for 4 devices but the job has 1"):
        spawn(run_rank, 1, args=(CFG, Placement.flatten(4)), timeout_s=300)


@pytest.mark.slow
def test_four_ranks_all_strategies_and_engines():
    cfg = RLHFConfig(batch_size=24, gen_len=6, iterations=2)  # mini-batches split over 1-4
    jobs = [(Placement.flatten(4), RunOptions())]
    for engine in ("ddp", "fsdp2"):
        jobs += [
            (Placement.interleave(4), RunOptions(engine=engine)),
            (Placement.separate(4, gen_devices=1), RunOptions(engine=engine)),
            (Placement.separate(4), RunOptions(engine=engine)),
            (Placement.flatten(4), RunOptions(engine=engine)),
        ]
    (results,) = run_placements(cfg, jobs, timeout_s=1800)
    for r in results[1:]:
        _assert_same_trajectory(r, results[0])


@pytest.mark.slow
def test_ray_and_torchrun_backends_give_the_same_trajectory():
    pytest.importorskip("ray")
    p = Placement.interleave(2)
    a = train(CFG, p, backend="torchrun", timeout_s=900)
    b = train(CFG, p, backend="ray", timeout_s=900)
    _assert_same_trajectory(b, a, tol=0.0)


@pytest.mark.slow
def test_reward_rises_with_the_rule_reward():
    res = train(RLHFConfig(iterations=16), Placement.interleave(2), timeout_s=1800)
    first, last = sum(res.score_mean[:4]) / 4, sum(res.score_mean[-4:]) / 4
    assert last > first + 0.05, res.score_mean
