"""Controller: straggler classification, DD sizes, ND cost model, hysteresis, via the master."""

from __future__ import annotations

import random

import pytest
from antdt.controller import (
    AdjustBatchSize,
    Controller,
    ControllerConfig,
    KillRestart,
    RestartCostModel,
    StragglerDetector,
)
from antdt.monitor import Monitor, StepStat


def feed(
    ctl: Controller, mon: Monitor, speeds, steps, start=0, remaining=10_000, noise=0.0, seed=0
):
    rng = random.Random(seed)
    acts = []
    for k in range(start, start + steps):
        for r, s in enumerate(speeds):
            b = ctl.sizes[r]
            t = b / (s * (1 + rng.uniform(-noise, noise)))
            mon.report(StepStat(r, k, b, t, t, t=float(k)))
        acts += [(k, a) for a in ctl.on_step(k, mon, remaining)]
    return acts


def test_detector_transient_vs_persistent():
    d = StragglerDetector(lam=1.3, persist_windows=3)
    assert d.update([1, 1, 0.5])[2] == "transient"
    assert d.update([1, 1, 1])[2] == "none"
    for _ in range(2):
        d.update([1, 1, 0.5])
    assert d.update([1, 1, 0.5])[2] == "persistent"


def test_dd_sizes_proportional_within_one_percent():
    cfg = ControllerConfig(mode="dd", global_batch=2048, world_size=2)
    ctl, mon = Controller(cfg), Monitor()
    acts = feed(ctl, mon, [2000.0, 1000.0], 6)
    assert acts and isinstance(acts[0][1], AdjustBatchSize)
    assert abs(ctl.sizes[0] - 2048 * 2 / 3) <= 0.01 * 2048 * 2 / 3
    assert sum(ctl.sizes) == 2048


def test_hysteresis_no_flapping_under_noise():
    cfg = ControllerConfig(mode="dd", global_batch=400, world_size=4)
    ctl, mon = Controller(cfg), Monitor()
    acts = feed(ctl, mon, [1.0, 1.0, 1.0, 1.0], 60, noise=0.1, seed=1)
    assert len(acts) <= 1  # equal speeds +-10%: at most one small adjustment, no oscillation


def test_nd_restart_follows_cost_model():
    model = RestartCostModel(restart_cost_s=5.0, margin=0.2)
    # closed form: R/sum(s) - R/(sum(s) - s_j + s*)
    assert model.time_saved(1000, [10, 10, 5], 2, 10) == pytest.approx(1000 / 25 - 1000 / 30)
    for remaining, expect in ((100_000, True), (100, False)):
        cfg = ControllerConfig(
            mode="nd", global_batch=300, world_size=3, persist_windows=2, cost_model=model
        )
        ctl, mon = Controller(cfg), Monitor()
        acts = feed(ctl, mon, [10.0, 10.0, 2.0], 12, remaining=remaining)
        kills = [a for _, a in acts if isinstance(a, KillRestart)]
        assert bool(kills) == expect
        d = ctl.decisions[-1]
        assert d.restart == (d.t_save_s > 5.0 * 1.2) == expect
        if expect:
            assert kills[0].rank == 2 and len(kills) == 1  # max_restarts=1


def test_transient_straggler_is_not_restarted():
    model = RestartCostModel(restart_cost_s=0.0)
    cfg = ControllerConfig(
        mode="nd", global_batch=300, world_size=3, persist_windows=3, cost_model=model
    )
    ctl, mon = Controller(cfg), Monitor()
    acts = feed(ctl, mon, [10.0, 10.0, 2.0], 4)  # two windows slow
    acts += feed(ctl, mon, [10.0, 10.0, 10.0], 10, start=4)
    assert not [a for _, a in acts if isinstance(a, KillRestart)]


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        ControllerConfig(mode="xx")
    with pytest.raises(ValueError, match="global_batch"):
        ControllerConfig(global_batch=1, world_size=4)
    with pytest.raises(ValueError, match="lam"):
        ControllerConfig(lam=1.0)


def test_master_applies_controller_actions_at_one_step_and_plots(tmp_path):
    from antdt.master import Master, MasterConfig
    from antdt.sharding import ShardConfig

    m = Master(
        MasterConfig(
            ShardConfig(4000, 50), ControllerConfig(mode="dd", global_batch=40, world_size=2)
        )
    )
    for step in range(6):
        plans = [m.service.plan_step(step, 2) for _ in range(2)]
        assert plans[0] is plans[1]
        m.service.commit_step(step, plans[0].generation)
        for r, speed in enumerate((200.0, 100.0)):
            b = plans[0].sizes[r]
            req = type("R", (), {})()
            m.monitor.report(StepStat(r, step, b, b / speed, b / speed, t=float(step)))
        m._reported[step] = {0}
        # the second report of the step goes through the RPC handler's logic
        from antdt.protocol import msg

        b1 = plans[0].sizes[1]
        m._h_ReportStats(
            msg(
                "StatsRequest",
                rank=1,
                step=step,
                samples=b1,
                compute_s=b1 / 100.0,
                step_s=b1 / 100.0,
            )
        )
        del req
    acts = m.status()["actions"]
    assert (
        acts
        and acts[0]["kind"] == "adjust_bs"
        and acts[0]["effective_step"] > acts[0]["decided_at_step"]
    )
    later = m.service.plan_step(6, 2)
    assert later.sizes == (27, 13)  # 40 * 2/3, 40 * 1/3 (largest remainder)
    plt = pytest.importorskip("matplotlib")
    del plt
    from antdt.timeline import plot_timeline

    plot_timeline(m.status(timeline=True), str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
