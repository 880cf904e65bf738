"""Placements: presets, and the errors impossible or inconsistent ones get."""

import pickle

import pytest
from rlhf_place.config import PPOConfig, RLHFConfig
from rlhf_place.placement import PLACED, Placement, PlacementError, make_placement
from rlhf_place.runtime import check_compatible


def test_presets():
    f = Placement.flatten(4)
    assert f.ranks_of("actor") == (0, 1, 2, 3) and not f.separated
    assert f.roles_on(2) == PLACED
    i = Placement.interleave(4)
    assert i.ranks_of("actor") == i.ranks_of("ref") == i.ranks_of("generator") == (0, 1)
    assert i.ranks_of("critic") == i.ranks_of("reward") == (2, 3)
    assert i.roles_on(3) == ("critic", "reward") and not i.separated
    s = Placement.separate(4, gen_devices=1)
    assert s.ranks_of("generator") == (3,) and s.ranks_of("actor") == (0, 1, 2) and s.separated
    assert s.roles_on(3) == ("generator",)
    assert make_placement("interleave", 3, 1).ranks_of("critic") == (1, 2)
    assert pickle.loads(pickle.dumps(s)) == s  # sent to every process
    assert "separate(train=[0, 1, 2]" in s.describe()


def test_more_groups_than_devices_is_a_clear_error():
    with pytest.raises(PlacementError, match="3 device groups need at least 3 devices, but only 2"):
        Placement(2, {"a": (0,), "b": (1,), "c": ()}, dict.fromkeys(PLACED, "a"))
    with pytest.raises(PlacementError, match="impossible placement: interleaving needs 2"):
        Placement.interleave(1)
    with pytest.raises(PlacementError, match="impossible placement: separation needs 2"):
        Placement.separate(1)
    with pytest.raises(PlacementError, match=r"actor_devices must be in \[1, 3\]"):
        Placement.interleave(4, actor_devices=4)
    with pytest.raises(PlacementError, match="gen_devices"):
        Placement.separate(4, gen_devices=0)


@pytest.mark.parametrize(
    ("groups", "roles", "message"),
    [
        ({"a": (0, 1), "b": (1,)}, {"a": "a"}, "groups must be disjoint"),
        ({"a": (0, 5)}, None, r"ranks \[5\] outside the 2 available devices"),
        ({"a": (0,)}, None, r"ranks \[1\] belong to no group"),
        ({"a": (0, 0, 1)}, None, "repeats a rank"),
        ({"a": (0,), "b": (1,)}, None, r"groups \['b'\] host no model"),
    ],
)
def test_inconsistent_groups(groups, roles, message):
    roles = roles if roles is not None and len(roles) == len(PLACED) else dict.fromkeys(PLACED, "a")
    with pytest.raises(PlacementError, match=message):
        Placement(2, groups, roles)


def test_roles_must_all_be_placed_on_known_groups():
    roles = dict.fromkeys(PLACED, "a")
    del roles["reward"]
    with pytest.raises(PlacementError, match=r"no group assigned to \['reward'\]"):
        Placement(1, {"a": (0,)}, roles)
    with pytest.raises(PlacementError, match="unknown group 'z'"):
        Placement(1, {"a": (0,)}, {**dict.fromkeys(PLACED, "a"), "critic": "z"})
    with pytest.raises(PlacementError, match="unknown roles"):
        Placement(1, {"a": (0,)}, {**dict.fromkeys(PLACED, "a"), "vllm": "a"})
    with pytest.raises(PlacementError, match="unknown strategy"):
        make_placement("pipeline", 2)


def test_batch_must_split_over_groups():
    cfg = RLHFConfig(batch_size=6, ppo=PPOConfig(num_minibatches=2))
    with pytest.raises(PlacementError, match="batch_size=6 does not split over the 4 devices"):
        check_compatible(cfg, Placement.flatten(4))
    with pytest.raises(PlacementError, match="mini-batch of 3 sequences does not split over the 2"):
        check_compatible(
            cfg,
            Placement(
                3,
                {"t": (0, 1), "g": (2,)},
                {**dict.fromkeys(PLACED, "t"), "generator": "g", "ref": "g", "reward": "g"},
            ),
        )
    check_compatible(RLHFConfig(batch_size=8), Placement.separate(4))


def test_run_options_validation():
    from rlhf_place.runtime import RunOptions

    with pytest.raises(ValueError, match="engine must be one of"):
        RunOptions(engine="megatron")
    with pytest.raises(ValueError, match="ZeRO-2 is not supported"):
        RunOptions(engine="deepspeed", zero_stage=2)
    with pytest.raises(ValueError, match="device must be"):
        RunOptions(device="tpu")


def test_config_validation():
    with pytest.raises(ValueError, match="divisible by num_minibatches"):
        RLHFConfig(batch_size=5)
    with pytest.raises(ValueError, match="reward must be one of"):
        RLHFConfig(reward="human")
    with pytest.raises(ValueError, match="clip_ratio"):
        PPOConfig(clip_ratio=-1)
    with pytest.raises(ValueError, match="unknown config keys"):
        RLHFConfig.from_dict({"batch": 3})
    cfg = RLHFConfig(iterations=3)
    assert RLHFConfig.from_dict(cfg.to_dict()) == cfg
