"""Exact optimal denoisers (dossier A6): the BFN losses are minimised by posterior means.

Continuous oracles are called as ``oracle(mu, t) -> E[x | mu, t]`` and use the sufficient statistic
``y_bar = mu / gamma(t)``, a Gaussian observation of x with variance ``tau^2 = (1 - gamma)/gamma``
(at t = 0 they return ``E[x]``). Discrete oracles are called as ``oracle(theta, t) -> P(x_l = . |
theta)``; the posterior depends on theta only, ``p(x | y) ∝ p(x) prod_l theta_{l, x_l}`` (A6.2).
All work in the dtype/device of their input and take ``device``/``dtype`` at construction.
"""

from __future__ import annotations

import itertools
import math

import torch

from bfn_solver.ops import class_softmax
from bfn_solver.schedules import ContinuousSchedule

__all__ = [
    "EmpiricalOracle",
    "FactorizedOracle",
    "GaussianMixtureOracle",
    "GaussianOracle",
    "JointTableOracle",
    "MarkovChainOracle",
]


def _gamma_tau2(schedule: ContinuousSchedule, mu: torch.Tensor, t: torch.Tensor):
    if t.shape != (mu.shape[0],):
        raise ValueError(f"t must have shape (batch,)={(mu.shape[0],)}, got {tuple(t.shape)}")
    g = schedule.tensor("gamma", t.to(torch.float64))
    tau2 = torch.exp(2.0 * t.double() * math.log(schedule.sigma1)) / g.clamp_min(1e-300)
    shape = (-1,) + (1,) * (mu.dim() - 1)
    return g.to(mu.dtype).view(shape), tau2.to(mu.dtype).view(shape), (g == 0).view(shape)


class GaussianOracle:
    """x ~ N(m, s^2 I): linear posterior mean and the exact PF-ODE flow map (A6.1)."""

    def __init__(
        self, mean: torch.Tensor | float, std: float, schedule: ContinuousSchedule | None = None
    ) -> None:
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.std = float(std)
        self.schedule = schedule or ContinuousSchedule()

    def __call__(self, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g, tau2, zero = _gamma_tau2(self.schedule, mu, t)
        m = self.mean.to(mu)
        s2 = self.std**2
        x = m + (s2 / (s2 + tau2)) * (mu / g.clamp_min(1e-300) - m)
        return torch.where(zero, m.expand_as(x), x)

    def flow_map(self, mu_a: torch.Tensor, a: float, b: float) -> torch.Tensor:
        """Exact PF-ODE solution from BFN time a to b:
        ``mu_b = alpha_b m + sqrt((alpha_b^2 s^2 + sigma_b^2)/(alpha_a^2 s^2 + sigma_a^2)) (mu_a - alpha_a m)``."""
        sc, s2 = self.schedule, self.std**2
        va = sc.gamma(a) ** 2 * s2 + sc.sigma(a) ** 2
        vb = sc.gamma(b) ** 2 * s2 + sc.sigma(b) ** 2
        m = self.mean.to(mu_a)
        return sc.gamma(b) * m + math.sqrt(vb / va) * (mu_a - sc.gamma(a) * m)

    def sample(
        self,
        n: int,
        dim: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> torch.Tensor:
        z = torch.randn((n, dim), generator=generator, dtype=dtype)
        return self.mean.to(dtype) + self.std * z


class GaussianMixtureOracle:
    """Isotropic Gaussian mixture ``sum_k pi_k N(m_k, s_k^2 I)`` (A6.1).

    ``x_hat = sum_k r_k [m_k + s_k^2/(s_k^2 + tau^2) (y_bar - m_k)]`` with responsibilities
    ``r_k ∝ pi_k N(y_bar; m_k, (s_k^2 + tau^2) I)``.
    """

    def __init__(
        self,
        means: torch.Tensor,
        stds: torch.Tensor | float,
        weights: torch.Tensor | None = None,
        schedule: ContinuousSchedule | None = None,
        device=None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        means = torch.as_tensor(means, dtype=dtype, device=device)
        if means.dim() != 2:
            raise ValueError(f"means must be (components, dim), got shape {tuple(means.shape)}")
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=dtype, device=device).expand(k).clone()
        weights = (
            torch.full((k,), 1.0 / k, dtype=dtype, device=device)
            if weights is None
            else torch.as_tensor(weights, dtype=dtype, device=device)
        )
        if (stds <= 0).any() or weights.shape != (k,) or (weights < 0).any():
            raise ValueError("stds must be > 0 and weights a non-negative (components,) vector")
        self.means, self.stds, self.weights = means, stds, weights / weights.sum()
        self.schedule = schedule or ContinuousSchedule()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __call__(self, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if mu.dim() != 2 or mu.shape[1] != self.dim:
            raise ValueError(f"mu must be (batch, {self.dim}), got {tuple(mu.shape)}")
        g, tau2, zero = _gamma_tau2(self.schedule, mu, t)
        m, s2, w = self.means.to(mu), (self.stds**2).to(mu), self.weights.to(mu)
        yb = mu / g.clamp_min(1e-300)
        var = s2[None, :] + tau2  # (B, K)
        d2 = torch.cdist(yb, m).square()  # (B, K)
        logr = w.log()[None] - 0.5 * d2 / var - 0.5 * self.dim * var.log()
        r = torch.softmax(logr, -1)
        gain = s2[None, :] / var  # (B, K)
        # sum_k r_k [m_k + gain_k (yb - m_k)] = (r (1 - gain)) @ m + (r gain).sum() yb
        x = (r * (1 - gain)) @ m + (r * gain).sum(-1, keepdim=True) * yb
        prior = (w[:, None] * m).sum(0)
        return torch.where(zero, prior.expand_as(x), x)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` exact samples and their component indices."""
        comp = torch.multinomial(
            self.weights.cpu().float(), n, replacement=True, generator=generator
        )
        z = torch.randn((n, self.dim), generator=generator, dtype=self.means.dtype)
        comp = comp.to(self.means.device)
        return self.means[comp] + self.stds[comp, None] * z.to(self.means.device), comp

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Most likely component of each sample (for mode-weight metrics)."""
        x = x.to(self.means)
        d2 = torch.cdist(x, self.means).square()
        ll = self.weights.log() - 0.5 * d2 / self.stds**2 - self.dim * self.stds.log()
        return ll.argmax(-1)


class EmpiricalOracle:
    """Empirical distribution of a point set ``{x_i}`` (the memorising optimal denoiser, A6.1):
    ``x_hat = sum_i softmax_i(-||y_bar - x_i||^2 / (2 tau^2)) x_i``. Works on any sample shape."""

    def __init__(
        self, points: torch.Tensor, schedule: ContinuousSchedule | None = None, chunk: int = 512
    ) -> None:
        points = torch.as_tensor(points)
        if points.dim() < 2 or points.shape[0] < 1:
            raise ValueError("points must be (n_points, ...) with at least one point")
        self.points = points
        self.schedule = schedule or ContinuousSchedule()
        self.chunk = chunk

    def __call__(self, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if mu.shape[1:] != self.points.shape[1:]:
            raise ValueError(
                f"mu has sample shape {tuple(mu.shape[1:])}, "
                f"the points {tuple(self.points.shape[1:])}"
            )
        g, tau2, zero = _gamma_tau2(self.schedule, mu, t)
        X = self.points.to(mu).flatten(1)
        yb = (mu / g.clamp_min(1e-300)).flatten(1)
        tau2 = tau2.flatten()
        out = []
        for i in range(0, mu.shape[0], self.chunk):
            d2 = torch.cdist(yb[i : i + self.chunk], X).square()
            w = torch.softmax(-0.5 * d2 / tau2[i : i + self.chunk, None], -1)
            out.append(w @ X)
        x = torch.cat(out).view_as(mu)
        return torch.where(zero, X.mean(0).view(mu.shape[1:]).expand_as(x), x)


def _log_theta(theta: torch.Tensor) -> torch.Tensor:
    return theta.clamp_min(torch.finfo(theta.dtype).tiny).log()


def _check_theta(theta: torch.Tensor, length: int, k: int) -> None:
    if theta.dim() != 3 or theta.shape[1:] != (length, k):
        raise ValueError(f"theta must be (batch, {length}, {k}), got {tuple(theta.shape)}")


class FactorizedOracle:
    """Independent positions ``p(x) = prod_l p_l(x_l)``: ``x_hat_l ∝ p_l * theta_l``."""

    def __init__(self, probs: torch.Tensor) -> None:
        probs = torch.as_tensor(probs, dtype=torch.float64)
        if probs.dim() != 2 or (probs < 0).any():
            raise ValueError("probs must be a non-negative (length, K) table")
        self.probs = probs / probs.sum(-1, keepdim=True)
        self.length, self.num_classes = probs.shape

    def __call__(self, theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _check_theta(theta, self.length, self.num_classes)
        logp = self.probs.to(theta).clamp_min(torch.finfo(theta.dtype).tiny).log()
        return class_softmax(logp[None] + _log_theta(theta))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.multinomial(self.probs.float(), n, replacement=True, generator=generator).T


class MarkovChainOracle:
    """A stationary first-order Markov chain ``(pi0, P)`` over K states, length L (A6.2).

    The posterior marginals given theta are computed exactly by forward-backward in log space,
    O(L K^2) per sequence: the text8 stand-in.
    """

    def __init__(self, init: torch.Tensor, trans: torch.Tensor, length: int) -> None:
        init = torch.as_tensor(init, dtype=torch.float64)
        trans = torch.as_tensor(trans, dtype=torch.float64)
        k = init.shape[0]
        if init.dim() != 1 or trans.shape != (k, k) or (trans < 0).any() or (init < 0).any():
            raise ValueError("need init (K,) and trans (K, K) non-negative")
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        self.init = init / init.sum()
        self.trans = trans / trans.sum(-1, keepdim=True)
        self.length, self.num_classes = length, k

    @classmethod
    def random_sparse(
        cls, num_classes: int, length: int, successors: int = 2, seed: int = 0
    ) -> MarkovChainOracle:
        """A random chain where every state has ``successors`` allowed next states."""
        g = torch.Generator().manual_seed(seed)
        trans = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        for i in range(num_classes):
            nxt = torch.randperm(num_classes, generator=g)[:successors]
            trans[i, nxt] = torch.rand(successors, generator=g, dtype=torch.float64) + 0.5
        init = torch.rand(num_classes, generator=g, dtype=torch.float64) + 0.5
        return cls(init, trans, length)

    def marginals(self) -> torch.Tensor:
        """True per-position marginals ``(L, K)``."""
        out = [self.init]
        for _ in range(self.length - 1):
            out.append(out[-1] @ self.trans)
        return torch.stack(out)

    def __call__(self, theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _check_theta(theta, self.length, self.num_classes)
        # scaled forward-backward in float64, laid out (L, K, batch) so that every reduction over
        # the K classes is vectorised over the batch; emissions rescaled to a max of 1 per position
        le = _log_theta(theta.double()).permute(1, 2, 0).contiguous()  # (L, K, B)
        e = torch.exp(le - le.amax(1, keepdim=True))
        pt = self.trans.to(e.device).T.contiguous()  # f_new[j] = sum_i P[i, j] f[i]
        p = self.trans.to(e.device)
        tiny = torch.finfo(torch.float64).tiny
        L = self.length
        f = self.init.to(e.device)[:, None] * e[0]
        fwd = [f / f.sum(0, keepdim=True).clamp_min(tiny)]
        for i in range(1, L):
            f = (pt @ fwd[-1]) * e[i]
            fwd.append(f / f.sum(0, keepdim=True).clamp_min(tiny))
        b = torch.ones_like(fwd[0])
        bwd = [b]
        for i in range(L - 1, 0, -1):
            b = p @ (e[i] * b)
            b = b / b.sum(0, keepdim=True).clamp_min(tiny)
            bwd.append(b)
        bwd.reverse()
        post = torch.stack(fwd) * torch.stack(bwd)  # (L, K, B)
        post = (post / post.sum(1, keepdim=True).clamp_min(tiny)).permute(2, 0, 1)
        return post.to(theta.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x = torch.empty((n, self.length), dtype=torch.long)
        x[:, 0] = torch.multinomial(self.init.float(), n, replacement=True, generator=generator)
        tr = self.trans.float()
        for i in range(1, self.length):
            x[:, i] = torch.multinomial(tr[x[:, i - 1]], 1, generator=generator).squeeze(-1)
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-probability of sequences ``(n, L)`` (``-inf`` for impossible ones)."""
        x = x.cpu()
        lp = self.init[x[:, 0]].log()
        for i in range(1, self.length):
            lp = lp + self.trans[x[:, i - 1], x[:, i]].log()
        return lp

    def entropy(self) -> float:
        """Exact entropy of the sequence distribution (nats)."""
        marg = self.marginals()
        h = -(self.init * self.init.clamp_min(1e-300).log()).sum()
        row_h = -(self.trans * self.trans.clamp_min(1e-300).log()).sum(-1)
        return float(h + (marg[:-1] @ row_h).sum())


class JointTableOracle:
    """Brute force over all K^L sequences of an explicit joint table (tests; K^L <= ~1e5)."""

    def __init__(self, log_prob_fn, length: int, num_classes: int) -> None:
        if num_classes**length > 200_000:
            raise ValueError("JointTableOracle enumerates K^L sequences: keep K^L <= 200000")
        seqs = torch.tensor(list(itertools.product(range(num_classes), repeat=length)))
        self.seqs, self.length, self.num_classes = seqs, length, num_classes
        self.logp = torch.as_tensor(log_prob_fn(seqs), dtype=torch.float64)

    def __call__(self, theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _check_theta(theta, self.length, self.num_classes)
        le = _log_theta(theta.double())  # (B, L, K)
        pos = torch.arange(self.length)
        ll = le[:, pos[None, :], self.seqs].sum(-1) + self.logp[None]  # (B, N)
        w = torch.softmax(ll, -1)
        onehot = torch.nn.functional.one_hot(self.seqs, self.num_classes).double()  # (N, L, K)
        return torch.einsum("bn,nlk->blk", w, onehot).to(theta)
