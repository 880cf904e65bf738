"""Metrics that discriminate between samplers (dossier A6.3).

- Gaussian mixtures: mode-weight total variation and within-mode excess variance.
- Markov chains: positional bigram total variation against the exact chain, and the mean exact
  log-probability of the samples (catches mode collapse from the argmax decode).
- Images/point sets: Fréchet distance between Gaussian fits, and the mean distance to the nearest
  reference point.
- Solver accuracy: error against an exact flow map and fitted convergence slopes.

Every sample-based metric has a sampling floor: compare against the same metric computed on an
exact sample of the same size (:func:`floor`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from bfn_solver.oracles import GaussianMixtureOracle, MarkovChainOracle

__all__ = [
    "bigram_tv",
    "bigram_tv_excess",
    "convergence_slope",
    "excess_variance_ratio",
    "floor",
    "frechet_distance",
    "invalid_transition_rate",
    "mean_log_prob",
    "mode_weight_tv",
    "nearest_distance",
]


def mode_weight_tv(samples: torch.Tensor, gmm: GaussianMixtureOracle) -> float:
    """Total variation between the samples' component frequencies and the mixture weights."""
    k = gmm.assign(samples)
    freq = torch.bincount(k, minlength=gmm.means.shape[0]).double() / samples.shape[0]
    return 0.5 * float((freq - gmm.weights.double().cpu()).abs().sum())


def excess_variance_ratio(samples: torch.Tensor, gmm: GaussianMixtureOracle) -> float:
    """Mean ``||x - m_k(x)||^2 / (D s_k^2)`` over samples; 1.0 is ideal, < 1 over-concentrated."""
    x = samples.to(gmm.means)
    k = gmm.assign(x)
    d2 = (x - gmm.means[k]).square().sum(-1) / (gmm.dim * gmm.stds[k] ** 2)
    return float(d2.mean())


def _positional_bigrams(x: torch.Tensor, k: int) -> torch.Tensor:
    """Empirical joint of (x_l, x_{l+1}) per position: (L-1, K, K)."""
    n, L = x.shape
    idx = x[:, :-1] * k + x[:, 1:]  # (n, L-1)
    counts = torch.zeros((L - 1, k * k), dtype=torch.float64)
    counts.scatter_add_(1, idx.T.cpu(), torch.ones((L - 1, n), dtype=torch.float64))
    return (counts / n).view(L - 1, k, k)


def bigram_tv(samples: torch.Tensor, chain: MarkovChainOracle) -> float:
    """Mean over positions of the TV between the samples' (x_l, x_{l+1}) joint and the chain's."""
    if samples.dim() != 2 or samples.shape[1] != chain.length:
        raise ValueError(f"samples must be (n, {chain.length}) class indices")
    emp = _positional_bigrams(samples.long(), chain.num_classes)
    marg = chain.marginals()
    true = marg[:-1, :, None] * chain.trans[None]
    return float(0.5 * (emp - true).abs().sum((1, 2)).mean())


def bigram_tv_excess(samples: torch.Tensor, chain: MarkovChainOracle, floor_value: float) -> float:
    """:func:`bigram_tv` minus the sampling floor of an exact sample of the same size (>= 0)."""
    return max(bigram_tv(samples, chain) - floor_value, 0.0)


def mean_log_prob(samples: torch.Tensor, chain: MarkovChainOracle) -> float:
    """Mean exact log-probability of the samples (``-inf`` if any is impossible); compare with
    ``-chain.entropy()``: higher means mode-seeking, lower means too much noise."""
    return float(chain.log_prob(samples.long()).mean())


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two sample sets ``(n, D)`` (FID without Inception)."""
    x = x.flatten(1).double().cpu().numpy()
    y = y.flatten(1).double().cpu().numpy()
    m1, m2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # trace sqrt(c1 c2) via the eigenvalues of sqrt(c1) c2 sqrt(c1)
    w, v = np.linalg.eigh(c1)
    s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.linalg.eigvalsh(s1 @ c2 @ s1)
    tr = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr)


def nearest_distance(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean Euclidean distance from each sample to its nearest reference point."""
    d = torch.cdist(x.flatten(1).double(), ref.flatten(1).double().to(x.device))
    return float(d.min(1).values.mean())


def floor(
    metric: Callable[[torch.Tensor], float],
    sampler: Callable[[int, int], torch.Tensor],
    n: int,
    seeds: Sequence[int] = (0, 1, 2),
) -> float:
    """Mean of ``metric`` on exact samples ``sampler(n, seed)``: the value of a perfect sampler."""
    return float(np.mean([metric(sampler(n, s)) for s in seeds]))


def convergence_slope(steps: Sequence[int], errors: Sequence[float]) -> float:
    """Least-squares slope of log(error) against log(steps); the observed order is ``-slope``."""
    if len(steps) != len(errors) or len(steps) < 2:
        raise ValueError("need at least two (steps, error) pairs")
    if any(not (e > 0 and math.isfinite(e)) for e in errors):
        raise ValueError(f"errors must be positive and finite, got {list(errors)}")
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def invalid_transition_rate(samples: torch.Tensor, chain: MarkovChainOracle) -> float:
    """Fraction of adjacent pairs (x_l, x_{l+1}) the chain forbids (plus forbidden starts): the
    chain analogue of the paper's spelling error (1 - spelling accuracy). An exact sample scores 0."""
    x = samples.long().cpu()
    bad = (chain.trans[x[:, :-1], x[:, 1:]] == 0).double().sum() + (chain.init[x[:, 0]] == 0).sum()
    return float(bad / x.numel())
