"""BFN samplers: continuous (:mod:`.continuous`) and discrete (:mod:`.discrete`)."""

from bfn_solver.samplers._common import LAST_STEPS, NFEBudgetExceeded, NFECounter, SampleResult
from bfn_solver.samplers.continuous import *  # noqa: F403
from bfn_solver.samplers.continuous import __all__ as _cts
from bfn_solver.samplers.discrete import *  # noqa: F403
from bfn_solver.samplers.discrete import __all__ as _dsc


class UnknownSamplerError(KeyError):
    """A sampler name that is not in the registry; the message lists the choices."""

    def __str__(self) -> str:
        return str(self.args[0])


class _Registry(dict):
    """Sampler name -> function; an unknown name raises :class:`UnknownSamplerError`."""

    def __init__(self, kind: str, items: dict) -> None:
        super().__init__(items)
        self.kind = kind

    def __missing__(self, key):
        raise UnknownSamplerError(
            f"unknown {self.kind} sampler {key!r}; choose from {sorted(self)}"
        )


CONTINUOUS_SAMPLERS = {
    "bfn_original": sample_bfn_original,  # noqa: F405
    "bfn_solver1": sample_bfn_solver1,  # noqa: F405
    "bfn_solver_pp1": sample_bfn_solver_pp1,  # noqa: F405
    "bfn_solver_pp2": sample_bfn_solver_pp2,  # noqa: F405
    "bfn_solver_pp3": sample_bfn_solver_pp3,  # noqa: F405
    "sde_bfn_solver_pp1": sample_sde_bfn_solver_pp1,  # noqa: F405
    "sde_bfn_solver_pp2": sample_sde_bfn_solver_pp2,  # noqa: F405
}
DISCRETE_SAMPLERS = {
    "bfn_original": sample_discrete_bfn_original,  # noqa: F405
    "bfn_solver1": sample_discrete_bfn_solver1,  # noqa: F405
    "bfn_solver2": sample_discrete_bfn_solver2,  # noqa: F405
    "bfn_solver2_singlestep": sample_discrete_bfn_solver2_singlestep,  # noqa: F405
    "sde_bfn_solver1": sample_discrete_sde_bfn_solver1,  # noqa: F405
    "sde_bfn_solver2": sample_discrete_sde_bfn_solver2,  # noqa: F405
}
CONTINUOUS_SAMPLERS = _Registry("continuous", CONTINUOUS_SAMPLERS)
DISCRETE_SAMPLERS = _Registry("discrete", DISCRETE_SAMPLERS)

__all__ = [
    "CONTINUOUS_SAMPLERS",
    "DISCRETE_SAMPLERS",
    "LAST_STEPS",
    "NFEBudgetExceeded",
    "NFECounter",
    "SampleResult",
    "UnknownSamplerError",
    *_cts,
    *_dsc,
]
