"""The trainer in one process against a real master: checkpoints, misuse, restart paths."""

from __future__ import annotations

import pytest
import torch
from antdt.agent import Agent
from antdt.client import MasterClient
from antdt.inject import EmulatedSpeed, KillAt, SleepSlowdown, from_spec
from antdt.job import JobConfig, SyntheticRegression, build_model, run_job, sum_mse
from antdt.master import Master, MasterConfig
from antdt.sharding import ShardConfig, StepPlan
from antdt.trainer import Trainer, TrainerConfig, load_checkpoint


def _master(n=96, sizes=(12,)):
    m = Master(MasterConfig(ShardConfig(n, 10)))
    m.service.set_sizes(list(sizes), 0)
    return m


def test_checkpoint_resume_is_exact(tmp_path):
    cfg = JobConfig(dataset_size=96, features=4, hidden=5)
    with _master() as m:
        full = run_job(cfg, m.address)
    ck = str(tmp_path / "ck")
    with _master() as m:
        part = run_job(
            JobConfig(
                **{**cfg.__dict__, "checkpoint_dir": ck, "checkpoint_every": 2, "max_steps": 5}
            ),
            m.address,
        )
        assert part["ranks"][0]["steps"] == 5
        # a "restart": a new trainer in the same job resumes from the step-3 checkpoint + snapshot
        state = load_checkpoint(tmp_path / "ck" / "antdt-checkpoint.pt")
        assert state["step"] == 3 and state["antdt"]["committed_step"] == 3
        rest = run_job(
            JobConfig(**{**cfg.__dict__, "checkpoint_dir": ck, "checkpoint_every": 2}), m.address
        )
        assert rest["ranks"][0]["start_step"] == 4
    assert rest["params_hex"] == full["params_hex"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "antdt-checkpoint.pt").write_bytes(b"\x00garbage")
    with pytest.raises(RuntimeError, match="unreadable"):
        load_checkpoint(tmp_path / "antdt-checkpoint.pt")


def test_restart_without_checkpoint_is_refused(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    with _master() as m:
        model = build_model(JobConfig(features=4, hidden=3))
        t = Trainer(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            SyntheticRegression(96, 4),
            sum_mse,
            MasterClient(m.address),
            TrainerConfig(checkpoint_dir=None),
        )
        t.ckpt_path = None
        assert t._resume() == 0  # no checkpointing configured: starts over, by design
        t.config = TrainerConfig(checkpoint_dir="unused")
        from pathlib import Path

        t.ckpt_path = Path("/nonexistent-antdt/ck.pt")
        with pytest.raises(RuntimeError, match="no checkpoint"):
            t._resume()


def test_agent_kill_restart_checkpoints_then_exits(monkeypatch):
    saved, codes = [], []
    a = Agent(None, 0, 1, save=saved.append, exit_fn=codes.append)  # type: ignore[arg-type]
    a.before_step(StepPlan(7, 0, (4,), (((0, 4),),), restart_rank=-1))
    assert saved == [] and codes == []
    a.before_step(StepPlan(7, 0, (4,), (((0, 4),),), restart_rank=0))
    assert saved == [] and codes == [] and a.skipped == [7]  # no elastic agent to relaunch us
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    a.before_step(StepPlan(8, 0, (4,), (((0, 4),),), restart_rank=0))
    assert saved == [7] and codes == [75]
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # restarts used up
    a.before_step(StepPlan(9, 0, (4,), (((0, 4),),), restart_rank=0))
    assert saved == [7] and a.skipped == [7, 9]


def test_injection_specs_validate():
    with pytest.raises(ValueError, match="kind"):
        from_spec([{"kind": "meteor"}])
    with pytest.raises(ValueError, match="bad arguments"):
        from_spec([{"kind": "kill", "rnk": 1}])
    with pytest.raises(ValueError, match="> 0"):
        EmulatedSpeed((1.0, 0.0))
    with pytest.raises(ValueError, match=">= 1"):
        SleepSlowdown(0, factor=0.5)
    with pytest.raises(ValueError, match="unknown job config"):
        JobConfig.from_json('{"dataset_sise": 3}')
    assert isinstance(from_spec([{"kind": "kill", "rank": 1, "step": 3}]).items[0], KillAt)


def test_emulated_speed_sleeps_in_proportion(monkeypatch):
    slept = []
    monkeypatch.setattr("time.sleep", slept.append)
    monkeypatch.setattr("antdt.inject._ATTEMPT", None)  # an earlier trainer in this process set it
    e = EmulatedSpeed((100.0, 50.0), until_restart=True)
    e.before_compute(0, 0, 10)
    e.before_compute(1, 0, 10)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # relaunched on a healthy host
    e.before_compute(1, 0, 10)
    assert slept == [0.1, 0.2, 0.1]
