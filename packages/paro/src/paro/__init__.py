"""paro: PaRO (Partial Redundancy Optimizer) and HO-Ring / PaRO-CC for data-parallel training.

Implements "Rethinking Memory and Communication Costs for Efficient Data Parallel Training of Large
Language Models" (Zhang, Wu et al., NeurIPS 2024; arXiv 2310.06003):

- :mod:`paro.strategy`: the (parameters, gradients, optimizer states) x (N, I, G) notation;
- :mod:`paro.topology`: cluster shape, intra/inter process groups;
- :mod:`paro.cost`: per-rank memory and per-step communication of every strategy, step time;
- :mod:`paro.planner`: the strategy-selection guideline;
- :mod:`paro.engine`: one sharded data-parallel engine for every strategy, composed of
  :mod:`paro.gathering` (t_param, safe module views from :mod:`paro.views`),
  :mod:`paro.reduction` (t_gradient, t_syncg), :mod:`paro.sharded_optim` (the os-level update,
  t_syncp, mixed-precision masters) and :mod:`paro.checkpoint` (sharded / full checkpoints,
  resharding), on the slice layout of :mod:`paro.layout`;
- :mod:`paro.horing`: the hierarchical overlapping ring all-reduce with point-to-point ops;
- :mod:`paro.emulation`: two emulated nodes (network namespaces + tc) for a real bandwidth split;
- :mod:`paro.deepspeed_baseline`: the same run under DeepSpeed ZeRO-1/2/3.
"""

from paro.accounting import scope_bytes
from paro.checkpoint import CheckpointError, consolidate
from paro.cost import (
    CommVolume,
    Memory,
    ModelStates,
    PlannedComm,
    StepEstimate,
    allreduce_volume,
    comm_plan,
    comm_volume,
    estimate_step,
    memory,
)
from paro.engine import ParoDataParallel
from paro.horing import hierarchical_all_reduce_, ho_ring_all_reduce_, ring_all_reduce_
from paro.planner import PlanRow, choose, format_table, plan
from paro.sharded_optim import ELEMENTWISE_OPTIMIZERS
from paro.strategy import PAPER_STRATEGIES, SUPPORTED, Strategy
from paro.topology import Links, ParoGroups, Topology, build_groups
from paro.views import ShardedTensorError

__version__ = "0.3.0"

__all__ = [
    "ELEMENTWISE_OPTIMIZERS",
    "PAPER_STRATEGIES",
    "SUPPORTED",
    "CheckpointError",
    "CommVolume",
    "Links",
    "Memory",
    "ModelStates",
    "ParoDataParallel",
    "ParoGroups",
    "PlanRow",
    "PlannedComm",
    "ShardedTensorError",
    "StepEstimate",
    "Strategy",
    "Topology",
    "allreduce_volume",
    "build_groups",
    "choose",
    "comm_plan",
    "comm_volume",
    "consolidate",
    "estimate_step",
    "format_table",
    "hierarchical_all_reduce_",
    "ho_ring_all_reduce_",
    "memory",
    "plan",
    "ring_all_reduce_",
    "scope_bytes",
]
