"""Cross-check against an independent implementation: diffusers' DPM-Solver++ scheduler.

The paper's continuous BFN-Solvers are DPM-Solver++ in BFN's parameterisation (Sec. 4). Continuous
BFN has ``mu = gamma x + sqrt(gamma (1 - gamma)) eps``, so ``mu / sqrt(gamma)`` is a
variance-preserving state with ``alphas_cumprod = gamma``; DPM-Solver++ is unchanged by that
rescaling (its updates depend on the log-SNR only). diffusers' ``DPMSolverMultistepScheduler``
with ``prediction_type="sample"``, driven on the same grid with the same denoiser (and, for the
SDE variants, the same noise), must then land where our samplers land. diffusers computes each
step in float32 (it casts the sample), so the match is at float32 precision.
"""

from __future__ import annotations

import math

import pytest
import torch
from bfn_solver import ContinuousSchedule, GaussianMixtureOracle
from bfn_solver.samplers import (
    sample_bfn_solver_pp1,
    sample_bfn_solver_pp2,
    sample_sde_bfn_solver_pp1,
    sample_sde_bfn_solver_pp2,
)

diffusers = pytest.importorskip("diffusers")
# diffusers' own set_timesteps calls np.array on a tensor expression (numpy 2 deprecation)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ETA, STEPS, TRAIN = 1e-3, 10, 1001  # train timestep n <-> BFN time t = 1 - n (1 - eta) / 1000
CASES = [
    (sample_bfn_solver_pp1, "dpmsolver++", 1),
    (sample_bfn_solver_pp2, "dpmsolver++", 2),
    (sample_sde_bfn_solver_pp1, "sde-dpmsolver++", 1),
    (sample_sde_bfn_solver_pp2, "sde-dpmsolver++", 2),
]


def _t(n: int) -> float:
    return 1.0 - n * (1.0 - ETA) / (TRAIN - 1)


def _setup(sigma1: float):
    sc = ContinuousSchedule(sigma1)
    g = torch.Generator().manual_seed(0)
    means = torch.rand(4, 8, generator=g, dtype=torch.float64) * 1.4 - 0.7
    oracle = GaussianMixtureOracle(means, 0.1, torch.ones(4, dtype=torch.float64), sc)
    mu0 = sc.sigma(ETA) * torch.randn(64, 8, generator=g, dtype=torch.float64)
    return sc, oracle, mu0


def _diffusers_run(sc, oracle, mu0, algorithm, order, seed, exact_schedule=True):
    gamma = torch.tensor([sc.gamma(_t(n)) for n in range(TRAIN)], dtype=torch.float64)
    betas = 1.0 - gamma / torch.cat([torch.ones(1, dtype=torch.float64), gamma[:-1]])
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=TRAIN,
        trained_betas=betas.numpy(),
        solver_order=order,
        prediction_type="sample",
        algorithm_type=algorithm,
        solver_type="midpoint",
        lower_order_final=False,
        final_sigmas_type="sigma_min",
    )
    if exact_schedule:  # gamma itself rather than diffusers' float32 cumulative product of betas
        sched.alphas_cumprod = gamma
    sched.set_timesteps(timesteps=[(TRAIN - 1) * (STEPS - k) // STEPS for k in range(STEPS)])
    gen = torch.Generator().manual_seed(seed)
    x = mu0 / math.sqrt(sc.gamma(ETA))
    for n in sched.timesteps.tolist():
        t = _t(n)
        x0 = oracle(x * math.sqrt(sc.gamma(t)), torch.full((x.shape[0],), t, dtype=x.dtype))
        # the SDE samplers draw one float64 normal of the state per step, after the denoiser call
        z = torch.randn(x.shape, generator=gen, dtype=x.dtype) if "sde" in algorithm else None
        x = sched.step(x0, n, x, variance_noise=z).prev_sample
    return x * math.sqrt(sc.gamma(1.0))


def _ours(fn, sc, oracle, mu0, seed):
    return fn(
        oracle,
        None,
        STEPS,
        sc,
        eta=ETA,
        clip=None,
        last_step="state",
        x_init=mu0,
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
    ).samples


@pytest.mark.parametrize(("fn", "algorithm", "order"), CASES)
def test_matches_diffusers_dpm_solver_pp(fn, algorithm, order):
    sc, oracle, mu0 = _setup(0.02)
    ours = _ours(fn, sc, oracle, mu0, seed=5)
    theirs = _diffusers_run(sc, oracle, mu0, algorithm, order, seed=5)
    torch.testing.assert_close(ours, theirs, rtol=5e-6, atol=5e-6)  # float32 steps: ~5e-7 seen
    # diffusers' own schedule (a float32 cumulative product of 1001 betas) drifts by ~1e-5
    pure = _diffusers_run(sc, oracle, mu0, algorithm, order, seed=5, exact_schedule=False)
    torch.testing.assert_close(ours, pure, rtol=2e-4, atol=2e-4)


def test_crosscheck_tells_orders_apart():
    """Negative control: first- and second-order runs differ far beyond the tolerance above."""
    sc, oracle, mu0 = _setup(0.02)
    pp1 = _ours(sample_bfn_solver_pp1, sc, oracle, mu0, seed=5)
    theirs2 = _diffusers_run(sc, oracle, mu0, "dpmsolver++", 2, seed=5)
    assert (pp1 - theirs2).abs().max() > 1e-3
