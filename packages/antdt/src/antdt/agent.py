"""Agent (AntDT Sec. "Agent"): carries out the controller's actions on each node.

The node-level half is torchrun's elastic agent (``torch.distributed.elastic``'s
``LocalElasticAgent``): it watches the worker processes, and on a worker exit it tears down and
restarts the local workers and re-joins the rendezvous (``--max-restarts``). The worker-level half
is :class:`Agent`, called by the trainer at every step boundary:

* ADJUST_BS needs no message: the step plan carries the per-rank sizes, identical on every rank.
* KILL_RESTART: before the step the controller picked, rank 0 checkpoints the state after the
  previous step (model, optimizer, master snapshot), all ranks meet at a barrier and exit with
  :data:`EXIT_RESTART`; torchrun relaunches the group (on a real cluster the scheduler would place
  the straggler's node elsewhere) and the trainer resumes from the checkpoint.

torchrun cannot replace one rank in place (it restarts every worker of the group), so a restart
costs a full re-rendezvous; the cost model's ``C`` must include it (the bench measures it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable

from .client import MasterClient
from .sharding import StepPlan

__all__ = ["EXIT_RESTART", "Agent", "Heartbeat"]

EXIT_RESTART = 75
_log = logging.getLogger("antdt.agent")


class Agent:
    def __init__(
        self,
        client: MasterClient,
        rank: int,
        world: int,
        *,
        save: Callable[[int], None] | None = None,
        exit_fn: Callable[[int], None] | None = None,
    ) -> None:
        self.client, self.rank, self.world = client, rank, world
        self.save = save
        self.exit_fn = exit_fn or _hard_exit
        self.skipped: list[int] = []

    def before_step(self, plan: StepPlan) -> None:
        if plan.restart_rank < 0:
            return
        if self.save is None:
            _log.warning(
                "KILL_RESTART of rank %d requested but no checkpointing: ignored", plan.restart_rank
            )
            return
        if not restarts_left():
            _log.warning(
                "KILL_RESTART of rank %d requested but no elastic agent restart is left "
                "(not under torchrun, or --max-restarts used up): ignored",
                plan.restart_rank,
            )
            self.skipped.append(plan.step)
            return
        _log.warning(
            "KILL_RESTART: rank %d is a persistent straggler; checkpointing step %d and exiting "
            "for torchrun to relaunch the group",
            plan.restart_rank,
            plan.step - 1,
        )
        import torch.distributed as dist

        self.save(plan.step - 1)
        if dist.is_initialized():
            dist.barrier()
        self.exit_fn(EXIT_RESTART)


def restarts_left() -> bool:
    """True under torchrun with restarts remaining (``TORCHELASTIC_MAX_RESTARTS`` >
    ``TORCHELASTIC_RESTART_COUNT``)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    try:
        left = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) - int(
            os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        )
    except ValueError:
        return False
    return left > 0


def _hard_exit(code: int) -> None:  # pragma: no cover - exits the process
    sys.stdout.flush()
    sys.stderr.flush()
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    os._exit(code)


class Heartbeat:
    """Background heartbeats for an async worker's leases (every ``interval_s``)."""

    def __init__(self, client: MasterClient, worker: str, interval_s: float = 1.0) -> None:
        self.client, self.worker, self.interval_s = client, worker, interval_s
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name=f"antdt-hb-{worker}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            # the master may be restarting; the next beat retries
            with contextlib.suppress(Exception):
                self.client.heartbeat(self.worker)

    def __enter__(self) -> Heartbeat:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)
