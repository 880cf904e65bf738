"""bfn_solver: fast samplers for Bayesian Flow Networks (Xue et al., ICML 2024)."""

from bfn_solver.oracles import (
    EmpiricalOracle,
    FactorizedOracle,
    GaussianMixtureOracle,
    GaussianOracle,
    JointTableOracle,
    MarkovChainOracle,
)
from bfn_solver.samplers import *  # noqa: F403
from bfn_solver.samplers import __all__ as _samplers_all
from bfn_solver.schedules import (
    ContinuousSchedule,
    DiscreteSchedule,
    bfn_to_diffusion_time,
    diffusion_to_bfn_time,
    time_grid,
)

__version__ = "0.2.0"

__all__ = [
    "ContinuousSchedule",
    "DiscreteSchedule",
    "EmpiricalOracle",
    "FactorizedOracle",
    "GaussianMixtureOracle",
    "GaussianOracle",
    "JointTableOracle",
    "MarkovChainOracle",
    "bfn_to_diffusion_time",
    "diffusion_to_bfn_time",
    "time_grid",
    *_samplers_all,
]
