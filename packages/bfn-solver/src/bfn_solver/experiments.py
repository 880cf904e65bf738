"""Oracle suites and the quality-vs-NFE runner (dossier A8.3 E1/E2; paper Figs. 3-4 in miniature).

Each suite bundles an exact denoiser, a schedule, the samplers to compare and an *error* (lower is
better, 0 for a perfect sampler up to sampling noise):

- ``gmm``: 64-D, 10-component isotropic Gaussian mixture (std 0.05, means in [-0.7, 0.7]^64),
  sigma1 = 1e-3. Error = (mode-weight TV - its exact-sample floor) + |excess-variance ratio - 1|
  (dossier A6.3 (b): mode weights *plus* within-mode spread; both components are kept).
- ``markov``: sparse Markov chain, K = 6, L = 12, 2 successors per state, beta1 = 2.5 (dossier
  A8.4). Error = positional bigram TV minus its exact-sample floor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from bfn_solver.metrics import (
    bigram_tv,
    excess_variance_ratio,
    invalid_transition_rate,
    mode_weight_tv,
)
from bfn_solver.oracles import GaussianMixtureOracle, MarkovChainOracle
from bfn_solver.samplers import CONTINUOUS_SAMPLERS, DISCRETE_SAMPLERS
from bfn_solver.schedules import ContinuousSchedule, DiscreteSchedule

__all__ = ["Suite", "find_matching_nfe", "gmm_suite", "markov_suite", "plot_curves", "run_curves"]


@dataclass
class Suite:
    """An oracle benchmark: ``error(samples) -> (error, components)``."""

    name: str
    kind: str  # "continuous" | "discrete"
    denoiser: Callable
    schedule: ContinuousSchedule | DiscreteSchedule
    shape: tuple[int, ...]
    error: Callable[[torch.Tensor], tuple[float, dict]]
    samplers: dict[str, Callable] = field(default_factory=dict)
    dtype: torch.dtype = torch.float32


def gmm_suite(
    n: int = 4000,
    dim: int = 64,
    components: int = 10,
    std: float = 0.05,
    sigma1: float = 1e-3,
    seed: int = 0,
) -> Suite:
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(components, dim, generator=g, dtype=torch.float64) * 1.4 - 0.7
    weights = torch.rand(components, generator=g, dtype=torch.float64) + 0.5
    sc = ContinuousSchedule(sigma1)
    gmm = GaussianMixtureOracle(means, std, weights, sc, dtype=torch.float32)
    gmm64 = GaussianMixtureOracle(means, std, weights, sc)
    tv_floor = float(
        np.mean(
            [
                mode_weight_tv(gmm64.sample(n, torch.Generator().manual_seed(100 + s))[0], gmm64)
                for s in range(3)
            ]
        )
    )

    def error(x: torch.Tensor) -> tuple[float, dict]:
        tv = mode_weight_tv(x.double(), gmm64)
        ratio = excess_variance_ratio(x.double(), gmm64)
        err = max(tv - tv_floor, 0.0) + abs(ratio - 1.0)
        return err, {"mode_tv": tv, "mode_tv_floor": tv_floor, "variance_ratio": ratio}

    return Suite("gmm", "continuous", gmm, sc, (n, dim), error, dict(CONTINUOUS_SAMPLERS))


def markov_suite(
    n: int = 20000,
    num_classes: int = 6,
    length: int = 12,
    successors: int = 2,
    beta1: float = 2.5,
    seed: int = 0,
) -> Suite:
    chain = MarkovChainOracle.random_sparse(num_classes, length, successors, seed=seed)
    sc = DiscreteSchedule(num_classes, beta1)
    floor = float(
        np.mean(
            [
                bigram_tv(chain.sample(n, torch.Generator().manual_seed(100 + s)), chain)
                for s in range(3)
            ]
        )
    )

    def error(x: torch.Tensor) -> tuple[float, dict]:
        tv = bigram_tv(x, chain)
        return max(tv - floor, 0.0), {
            "bigram_tv": tv,
            "bigram_tv_floor": floor,
            "invalid_rate": invalid_transition_rate(x, chain),
        }

    s = Suite(
        "markov", "discrete", chain, sc, (n, length, num_classes), error, dict(DISCRETE_SAMPLERS)
    )
    s.chain = chain  # type: ignore[attr-defined]
    return s


def run_curves(
    suite: Suite,
    nfes: Sequence[int],
    seeds: Sequence[int] = (0,),
    samplers: Sequence[str] | None = None,
    extra_nfes: dict[str, Sequence[int]] | None = None,
    device=None,
    progress: Callable | None = None,
) -> dict:
    """Error of every sampler at every NFE (mean over ``seeds``). Returns
    ``{sampler: {nfe: {"error", "components", "nfe_counted", "seconds"}}}``."""
    names = list(samplers) if samplers is not None else list(suite.samplers)
    jobs = [
        (nm, k) for nm in names for k in sorted(set(nfes) | set((extra_nfes or {}).get(nm, ())))
    ]
    it = jobs if progress is None else progress(jobs, desc=f"{suite.name}")
    out: dict = {nm: {} for nm in names}
    for nm, k in it:
        fn = suite.samplers[nm]
        errs, comps, t0, used = [], [], time.perf_counter(), 0
        for s in seeds:
            gen = torch.Generator(device=device or "cpu").manual_seed(1000 + s)
            r = fn(
                suite.denoiser,
                suite.shape,
                k,
                suite.schedule,
                generator=gen,
                device=device,
                dtype=suite.dtype,
            )
            e, c = suite.error(r.samples.cpu())
            errs.append(e)
            comps.append(c)
            used = max(used, r.nfe)
        out[nm][k] = {
            "error": float(np.mean(errs)),
            "error_sem": float(np.std(errs) / math.sqrt(len(errs))),
            "components": {key: float(np.mean([c[key] for c in comps])) for key in comps[0]},
            "nfe_counted": used,
            "seconds": time.perf_counter() - t0,
        }
    return out


def find_matching_nfe(curve: dict, target: float) -> float | None:
    """Smallest NFE at which ``curve`` ({nfe: {"error"}}) reaches ``target``, log-interpolated
    between the bracketing grid points; None if it never does on the grid."""
    ks = sorted(curve)
    prev = None
    for k in ks:
        e = curve[k]["error"]
        if e <= target:
            if prev is None:
                return float(k)
            k0, e0 = prev
            if e0 <= 0 or e <= 0:
                return float(k)
            f = (math.log(e0) - math.log(target)) / (math.log(e0) - math.log(e))
            return float(math.exp(math.log(k0) + f * (math.log(k) - math.log(k0))))
        prev = (k, e)
    return None


def plot_curves(results: dict[str, dict], path, title: str = "error vs NFE") -> None:
    """One panel per suite: error against counted NFE, log-log (needs the ``plots`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (suite, curves) in zip(axes[0], results.items(), strict=True):
        for nm, c in curves.items():
            ks = sorted(c)
            ax.plot(
                ks,
                [max(c[k]["error"], 1e-4) for k in ks],
                marker="o",
                ms=3,
                label=nm,
                lw=2.5 if nm == "bfn_original" else 1.2,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (counted)")
        ax.set_ylabel("error")
        ax.set_title(suite)
        ax.legend(fontsize=7)
    fig.suptitle(title + " (an error of 0 is drawn at 1e-4)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
