"""Metrics that discriminate between samplers (dossier A6.3).

- Gaussian mixtures: mode-weight total variation and within-mode excess variance.
- Markov chains: positional bigram total variation against the exact chain, and the mean exact
  log-probability of the samples (catches mode collapse from the argmax decode).
- Images/point sets: Fréchet distance between Gaussian fits, and the mean distance to the nearest
  reference point. For the 8x8 digits also in the feature space of a small digits classifier
  (:class:`DigitsFeatures`, the dossier's stand-in for FID's Inception features) and the total
  variation between predicted-class histograms.
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
    "DigitsFeatures",
    "bigram_tv",
    "bigram_tv_excess",
    "class_histogram_tv",
    "convergence_slope",
    "excess_variance_ratio",
    "feature_frechet_distance",
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


class DigitsFeatures:
    """A small MLP classifier of scikit-learn's 8x8 digits, used as a feature extractor.

    FID measures the Fréchet distance in the features of an ImageNet classifier; for 8x8 digits a
    classifier trained here plays that role (dossier A8.3 E3). ``features(x)`` is the penultimate
    layer (``hidden2`` wide) of ``64 -> hidden -> hidden2 -> 10``; inputs are pixels in [-1, 1]
    (the scaling of :func:`bfn_solver.training.load_digits_data`), clipped to that range.
    Training is deterministic for a seed (about a second on CPU) and does not touch the global RNG;
    ``test_accuracy`` is measured on ``test_fraction`` of the digits held out of its training.
    """

    def __init__(
        self,
        seed: int = 0,
        steps: int = 600,
        hidden: int = 128,
        hidden2: int = 64,
        test_fraction: float = 0.2,
    ) -> None:
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "digits features need scikit-learn: pip install 'bfn-solver[digits]'"
            ) from e
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
        d = load_digits()
        x = torch.as_tensor(d.data, dtype=torch.float32) / 8.0 - 1.0
        y = torch.as_tensor(d.target, dtype=torch.long)
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(x.shape[0], generator=gen)
        n_test = round(test_fraction * x.shape[0])
        test, train = perm[:n_test], perm[n_test:]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.body = torch.nn.Sequential(
                torch.nn.Linear(64, hidden),
                torch.nn.SiLU(),
                torch.nn.Linear(hidden, hidden2),
                torch.nn.SiLU(),
            )
            self.head = torch.nn.Linear(hidden2, 10)
        params = [*self.body.parameters(), *self.head.parameters()]
        opt = torch.optim.Adam(params, lr=3e-3, weight_decay=1e-4)
        with torch.enable_grad():
            for _ in range(steps):
                idx = train[torch.randint(len(train), (256,), generator=gen)]
                xb = x[idx] + 0.05 * torch.randn(len(idx), 64, generator=gen)  # light jitter
                loss = torch.nn.functional.cross_entropy(self.head(self.body(xb)), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.body.eval()
        self.head.eval()
        self.test_accuracy = float((self.classify(x[test]) == y[test]).double().mean())
        self.data = x

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(n, hidden2)`` of images ``(n, 64)`` in [-1, 1]."""
        x = x.detach().flatten(1).float().cpu()
        if x.shape[1] != 64:
            raise ValueError(f"digits are (n, 64) pixel vectors, got shape {tuple(x.shape)}")
        return self.body(x.clamp(-1.0, 1.0))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class per image, ``(n,)``."""
        return self.head(self.features(x)).argmax(-1)


def feature_frechet_distance(
    x: torch.Tensor, ref: torch.Tensor, extractor: DigitsFeatures
) -> float:
    """:func:`frechet_distance` in the extractor's feature space (an FID for 8x8 digits)."""
    return frechet_distance(extractor.features(x), extractor.features(ref))


def class_histogram_tv(x: torch.Tensor, ref: torch.Tensor, extractor: DigitsFeatures) -> float:
    """Total variation between the predicted-class histograms of ``x`` and ``ref`` (mode coverage:
    a sampler that over-produces some digits scores high even when each image looks right)."""
    hx = torch.bincount(extractor.classify(x), minlength=10).double() / x.shape[0]
    hr = torch.bincount(extractor.classify(ref), minlength=10).double() / ref.shape[0]
    return 0.5 * float((hx - hr).abs().sum())
