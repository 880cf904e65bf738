"""rlhf-place: adaptive model placement for PPO RLHF training.

Xiao et al., *An Adaptive Placement and Parallelism Framework for Accelerating RLHF Training*
(Ant Group, arXiv 2312.11819). Four Hugging Face models (actor, critic, reference, reward) placed
on device groups by Flattening, Interleaving or Separation, executed for real with
torch.distributed (DDP, FSDP2, DeepSpeed ZeRO) under torchrun-style processes or Ray placement
groups; a cost model, planner and GPU-cluster simulator.
"""

from rlhf_place.config import ModelConfig, PPOConfig, RLHFConfig
from rlhf_place.cost import Hardware, ModelSpec, PlanSpec, StageCost, Workload, estimate
from rlhf_place.launch import run_placements, train
from rlhf_place.placement import Placement, PlacementError, make_placement
from rlhf_place.planner import calibrate_cpu, choose, plan
from rlhf_place.runtime import RunOptions, RunResult, run_rank
from rlhf_place.simulator import simulate

__version__ = "0.1.0"

__all__ = [
    "Hardware",
    "ModelConfig",
    "ModelSpec",
    "PPOConfig",
    "Placement",
    "PlacementError",
    "PlanSpec",
    "RLHFConfig",
    "RunOptions",
    "RunResult",
    "StageCost",
    "Workload",
    "calibrate_cpu",
    "choose",
    "estimate",
    "make_placement",
    "plan",
    "run_placements",
    "run_rank",
    "simulate",
    "train",
]
