"""antdt: AntDT (Xiao et al., arXiv 2404.09679), straggler-adaptive distributed training.

* :mod:`antdt.sharding`: the Stateful Dynamic Data Sharding state machine (TODO/DOING/DONE with
  committed offsets, leases, fenced commits, WAIT vs END, retry limit, snapshot/restore).
* :mod:`antdt.master`, :mod:`antdt.client`, :mod:`antdt.protocol`: the service in its own process
  over gRPC + protobuf (loopback by default, token when exposed, malformed messages rejected).
* :mod:`antdt.monitor`, :mod:`antdt.controller`: compute-only batch times, straggler detection
  (transient vs persistent), AntDT-DD batch sizes, AntDT-ND kill/restart by a cost model.
* :mod:`antdt.agent`, :mod:`antdt.trainer`, :mod:`antdt.dd`, :mod:`antdt.data`: the worker side
  on torchrun / DDP.
* :mod:`antdt.inject`, :mod:`antdt.baselines`: straggler/fault injection and the baselines.

Torch-free modules (the master side) import without torch; the worker side loads lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ShardConfig": "sharding",
    "ShardService": "sharding",
    "ShardState": "sharding",
    "Lease": "sharding",
    "StepPlan": "sharding",
    "WAIT": "sharding",
    "END": "sharding",
    "StaleLeaseError": "sharding",
    "OffsetMismatchError": "sharding",
    "RetryLimitExceeded": "sharding",
    "ShardError": "sharding",
    "allocate": "sharding",
    "Master": "master",
    "MasterConfig": "master",
    "MasterClient": "client",
    "MasterUnavailable": "client",
    "RequestRejected": "client",
    "Monitor": "monitor",
    "MonitorConfig": "monitor",
    "StepStat": "monitor",
    "Controller": "controller",
    "ControllerConfig": "controller",
    "RestartCostModel": "controller",
    "StragglerDetector": "controller",
    "AdjustBatchSize": "controller",
    "KillRestart": "controller",
    "Agent": "agent",
    "EXIT_RESTART": "agent",
    "Trainer": "trainer",
    "TrainerConfig": "trainer",
    "dd_backward": "dd",
    "loss_scale": "dd",
    "ShardLoader": "data",
    "StepLoader": "data",
    "EmulatedSpeed": "inject",
    "SleepSlowdown": "inject",
    "CpuHog": "inject",
    "KillAt": "inject",
    "JobConfig": "job",
    "run_job": "job",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'antdt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"antdt.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
