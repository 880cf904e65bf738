"""Controller (AntDT Sec. "Controller", AntDT-ND and AntDT-DD): straggler detection and actions.

* :class:`StragglerDetector`: per window, a rank whose throughput is below ``median / lam`` is
  flagged; flagged for ``persist_windows`` consecutive windows it is *persistent*, else *transient*
  (the paper's taxonomy; the thresholds are our choice, the paper's values were not retrievable).
* AntDT-DD (``mode="dd"``): per-rank batch sizes ``b_i = B * s_i / sum_j s_j`` from the monitor's
  compute-only throughput (median of the last ``window`` steps), under a fixed global batch
  ``B``; re-planned every ``replan_every`` steps when the predicted step time improves by more than ``hysteresis``
  (no flapping on noise). The change takes effect at the first step not yet planned, on every rank.
* AntDT-ND (``mode="nd"``): the same ADJUST_BS, plus KILL_RESTART of a *persistent* straggler when
  the :class:`RestartCostModel` says the restart pays: ``T_save > C * (1 + margin)`` with
  ``T_save = R / sum(s) - R / (sum(s) - s_j + s*)``, ``R`` the remaining samples, ``s*`` the
  speed expected after relaunch (the median of the other ranks) and ``C`` the restart cost.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .monitor import Monitor, NodeState
from .sharding import allocate

__all__ = [
    "Action",
    "AdjustBatchSize",
    "Controller",
    "ControllerConfig",
    "KillRestart",
    "RestartCostModel",
    "RestartDecision",
    "StragglerDetector",
    "StragglerKind",
]

StragglerKind = str  # "none" | "transient" | "persistent"


@dataclass(frozen=True)
class AdjustBatchSize:
    sizes: tuple[int, ...]
    effective_step: int = -1  # filled in by the master (first unplanned step)
    reason: str = ""


@dataclass(frozen=True)
class KillRestart:
    rank: int
    effective_step: int = -1
    t_save_s: float = 0.0
    cost_s: float = 0.0


Action = AdjustBatchSize | KillRestart


@dataclass(frozen=True)
class RestartDecision:
    restart: bool
    t_save_s: float
    cost_s: float
    speeds: tuple[float, ...]
    rank: int
    remaining: int


@dataclass(frozen=True)
class RestartCostModel:
    """When is relaunching straggler ``j`` worth it (AntDT-ND's KILL_RESTART, reconstructed)?"""

    restart_cost_s: float = 10.0
    margin: float = 0.2

    def __post_init__(self) -> None:
        if self.restart_cost_s < 0 or self.margin < 0:
            raise ValueError("restart_cost_s and margin must be >= 0")

    def time_saved(
        self, remaining: int, speeds: list[float] | tuple[float, ...], j: int, s_star: float
    ) -> float:
        """Seconds saved on ``remaining`` samples, with throughput ``sum(s)`` (batch sizes already
        proportional) before and ``sum(s) - s_j + s*`` after the restart."""
        total = float(sum(speeds))
        after = total - speeds[j] + s_star
        if after <= 0 or total <= 0:
            return 0.0
        return remaining / total - remaining / after

    def decide(
        self,
        remaining: int,
        speeds: list[float] | tuple[float, ...],
        j: int,
        s_star: float | None = None,
    ) -> RestartDecision:
        others = [s for i, s in enumerate(speeds) if i != j]
        s_star = statistics.median(others) if s_star is None and others else (s_star or speeds[j])
        t = self.time_saved(remaining, speeds, j, s_star)
        return RestartDecision(
            t > self.restart_cost_s * (1 + self.margin),
            t,
            self.restart_cost_s,
            tuple(speeds),
            j,
            remaining,
        )


@dataclass(frozen=True)
class ControllerConfig:
    """``mode``: "off" (plain equal batches), "dd" or "nd". ``global_batch``: B (fixed).
    ``window``/``replan_every``: steps per detection window / between re-plans.
    ``lam``: straggler threshold (rank speed < median / lam). ``persist_windows``: windows in a row
    to call a straggler persistent. ``hysteresis``: minimum relative gain in predicted step time for
    a re-plan. ``max_restarts``: KILL_RESTART actions per job (ND)."""

    mode: str = "dd"
    global_batch: int = 64
    world_size: int = 2
    window: int = 4
    replan_every: int = 2
    warmup_steps: int = 1
    lam: float = 1.3
    persist_windows: int = 3
    hysteresis: float = 0.1
    min_batch: int = 1
    max_restarts: int = 1
    cost_model: RestartCostModel = field(default_factory=RestartCostModel)

    def __post_init__(self) -> None:
        if self.mode not in ("off", "dd", "nd"):
            raise ValueError(
                f"ControllerConfig.mode must be 'off', 'dd' or 'nd', got {self.mode!r}"
            )
        if self.world_size < 1 or self.global_batch < self.world_size * self.min_batch:
            raise ValueError(
                f"global_batch={self.global_batch} must give each of world_size={self.world_size} "
                f"ranks at least min_batch={self.min_batch}"
            )
        for name in ("window", "replan_every", "persist_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"ControllerConfig.{name} must be >= 1")
        if self.warmup_steps < 0 or self.max_restarts < 0 or self.hysteresis < 0:
            raise ValueError("warmup_steps, max_restarts and hysteresis must be >= 0")
        if not self.lam > 1:
            raise ValueError(f"ControllerConfig.lam must be > 1, got {self.lam}")

    def equal_sizes(self) -> tuple[int, ...]:
        return tuple(allocate(self.global_batch, [1.0] * self.world_size))


class StragglerDetector:
    """Consecutive-window straggler classification (transient vs persistent)."""

    def __init__(self, lam: float = 1.3, persist_windows: int = 3) -> None:
        self.lam = lam
        self.persist_windows = persist_windows
        self.flags: dict[int, int] = {}

    def update(self, speeds: list[float]) -> dict[int, StragglerKind]:
        med = statistics.median(speeds)
        out = {}
        for r, s in enumerate(speeds):
            if s < med / self.lam:
                self.flags[r] = self.flags.get(r, 0) + 1
            else:
                self.flags[r] = 0
            n = self.flags[r]
            out[r] = (
                "none" if n == 0 else ("persistent" if n >= self.persist_windows else "transient")
            )
        return out

    def reset(self, rank: int) -> None:
        self.flags[rank] = 0


class Controller:
    """Turns monitor statistics into actions. Pure logic: the master applies the actions."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.detector = StragglerDetector(config.lam, config.persist_windows)
        self.sizes: tuple[int, ...] = config.equal_sizes()
        self.restarts = 0
        self.decisions: list[RestartDecision] = []
        self.log: list[tuple[int, Action]] = []
        self._last_step = -1

    def predicted_step_time(self, sizes: tuple[int, ...], speeds: list[float]) -> float:
        return max(b / s for b, s in zip(sizes, speeds, strict=True))

    def on_step(self, step: int, monitor: Monitor, remaining: int) -> list[Action]:
        """Call when every rank reported ``step``; returns the actions to apply (maybe none)."""
        cfg = self.config
        if cfg.mode == "off" or step <= self._last_step:
            return []
        self._last_step = step
        if step < cfg.warmup_steps or (step + 1 - cfg.warmup_steps) % cfg.replan_every:
            return []
        speeds = monitor.speeds(cfg.world_size)
        if speeds is None:
            return []
        win = [monitor.window_speed(r, cfg.window) or speeds[r] for r in range(cfg.world_size)]
        kinds = self.detector.update(win)
        for r, k in kinds.items():
            monitor.set_state(r, NodeState.STRAGGLER if k != "none" else NodeState.ALIVE)
        actions: list[Action] = []
        if cfg.mode == "nd" and self.restarts < cfg.max_restarts:
            persistent = [r for r, k in kinds.items() if k == "persistent"]
            if persistent:
                j = min(persistent, key=lambda r: speeds[r])
                d = cfg.cost_model.decide(remaining, speeds, j)
                self.decisions.append(d)
                if d.restart:
                    self.restarts += 1
                    self.detector.reset(j)
                    a = KillRestart(j, -1, d.t_save_s, d.cost_s)
                    self.log.append((step, a))
                    actions.append(a)
                    return actions
        # sizes from the window medians (robust to one noisy step), not the EMA
        new = tuple(allocate(cfg.global_batch, win, cfg.min_batch))
        if new != self.sizes:
            old_t = self.predicted_step_time(self.sizes, win)
            new_t = self.predicted_step_time(new, win)
            if new_t < old_t * (1 - cfg.hysteresis):
                self.sizes = new
                a = AdjustBatchSize(new, -1, f"predicted step {old_t:.4f}s -> {new_t:.4f}s")
                self.log.append((step, a))
                actions.append(a)
        return actions

    def on_restart(self) -> None:
        """After a KILL_RESTART the restarted ranks' speeds are unknown: go back to the current
        sizes until new statistics arrive (the monitor forgets the old speeds)."""
        self._last_step = -1
