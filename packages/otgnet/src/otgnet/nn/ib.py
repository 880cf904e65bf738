"""Information-bottleneck message passing (paper Sec. 4.1; official ``models/IB.py``).

Across an edge between nodes of different classes only ``z = enc(x)`` travels, trained to

    L_IB = I_CLUB(Z; Y) - beta * I_MINE(X; Z)

i.e. to carry little information about the class ``Y`` of the node it comes from (an *upper* bound,
CLUB, is minimised) and much about its input ``X`` (a *lower* bound, MINE, is maximised). The two
estimators are trained alongside (CLUB by maximum likelihood of ``q(y | z)``, MINE by maximising its
Donsker-Varadhan bound), in the official code only in the first epochs of each task.

References: Cheng et al. 2020 (CLUB, sampled variant), Belghazi et al. 2018 (MINE).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MINE", "CLUBSample", "InformationBottleneck"]


class CLUBSample(nn.Module):
    """Sampled CLUB upper bound on ``I(Z; Y)`` with a Gaussian ``q(y | z)`` (``tanh`` log-variance,
    as in the official code; one-hot ``y`` is treated as a Gaussian target there too)."""

    def __init__(self, z_dim: int, y_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.logvar = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh()
        )

    def log_likelihood(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean ``log q(y | z)`` up to the ``-0.5 log 2 pi`` constant per dimension."""
        mu, lv = self.mu(z), self.logvar(z)
        return (-0.5 * (y - mu) ** 2 / lv.exp() - 0.5 * lv).sum(-1).mean()

    def forward(
        self, z: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The CLUB estimate ``E[log q(y_i|z_i)] - E[log q(y_perm(i)|z_i)]``."""
        mu, lv = self.mu(z), self.logvar(z)
        perm = torch.randperm(len(z), generator=generator, device="cpu").to(z.device)
        pos = -0.5 * (y - mu) ** 2 / lv.exp()
        neg = -0.5 * (y[perm] - mu) ** 2 / lv.exp()
        return (pos.sum(-1) - neg.sum(-1)).mean()


class MINE(nn.Module):
    """MINE lower bound (Donsker-Varadhan) on ``I(X; Z)`` with a two-layer statistics network."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.T = nn.Sequential(nn.Linear(x_dim + z_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(
        self, x: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        perm = torch.randperm(len(z), generator=generator, device="cpu").to(z.device)
        joint = self.T(torch.cat([x, z], -1)).squeeze(-1)
        marg = self.T(torch.cat([x, z[perm]], -1)).squeeze(-1)
        return joint.mean() - (torch.logsumexp(marg, 0) - math.log(len(marg)))


class InformationBottleneck(nn.Module):
    """Encoder ``z = W2 ReLU(W1 x)`` with its CLUB/MINE estimators and a cache of recent inputs.

    The encoder is applied to *detached* inputs (as in the official code): the classification loss
    neither trains it nor flows through it. It is trained on its own objective by :meth:`step`,
    with its own Adam optimisers (learning rate ``lr``), on up to ``cache_size`` cached ``(x, y)``.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        beta: float = 0.3,
        hidden: int = 64,
        lr: float = 5e-3,
        cache_size: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if cache_size < 2:
            raise ValueError(f"cache_size must be >= 2, got {cache_size}")
        self.dim, self.num_classes, self.beta, self.cache_size = dim, num_classes, beta, cache_size
        self.encoder = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.club = CLUBSample(dim, num_classes, hidden)
        self.mine = MINE(dim, dim, hidden)
        self.lr = lr
        self._gen = torch.Generator().manual_seed(seed)
        self._cx: list[torch.Tensor] = []
        self._cy: list[torch.Tensor] = []
        self.reset_optimizers()

    def reset_optimizers(self) -> None:
        self.enc_opt = torch.optim.Adam(self.encoder.parameters(), lr=self.lr)
        self.est_opt = torch.optim.Adam(
            [*self.club.parameters(), *self.mine.parameters()], lr=self.lr
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``z`` for detached ``x``; no gradient reaches the caller's graph."""
        with torch.no_grad():
            return self.encoder(x.detach())

    def remember(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Cache ``(x, y)`` pairs (``y`` = class of the node ``x`` came from) for :meth:`step`."""
        if len(x) == 0:
            return
        self._cx.append(x.detach())
        self._cy.append(y.detach().long())
        n = sum(len(a) for a in self._cx)
        while n - len(self._cx[0]) >= self.cache_size:
            n -= len(self._cx.pop(0))
            self._cy.pop(0)

    def clear_cache(self) -> None:
        self._cx.clear()
        self._cy.clear()

    def cached(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self._cx:
            return None
        x, y = torch.cat(self._cx)[-self.cache_size :], torch.cat(self._cy)[-self.cache_size :]
        return x, y

    def step(self, train_estimators: bool = True) -> dict[str, float]:
        """One estimator step (if ``train_estimators``) and one encoder step on the cache."""
        data = self.cached()
        if data is None or len(data[0]) < 2:
            return {}
        x, y = data
        y1 = torch.nn.functional.one_hot(y.clamp_min(0), self.num_classes).float()
        out: dict[str, float] = {}
        if train_estimators:
            with torch.no_grad():
                z = self.encoder(x)
            est = -self.club.log_likelihood(z, y1) - self.mine(x, z, self._gen)
            self.est_opt.zero_grad(set_to_none=True)
            est.backward()
            self.est_opt.step()
        z = self.encoder(x)
        club = self.club(z, y1, self._gen)
        mine = self.mine(x, z, self._gen)
        loss = club - self.beta * mine
        if torch.isfinite(loss):
            self.enc_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.enc_opt.step()
        # the estimators' grads from the encoder step are not theirs to keep
        self.est_opt.zero_grad(set_to_none=True)
        out.update(club=club.item(), mine=mine.item(), loss=loss.item())
        return out
