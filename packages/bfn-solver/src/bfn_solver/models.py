"""Small example networks and the epsilon -> data adapter (upstream ``model.py`` conventions).

- :class:`ContinuousMLP`: an epsilon-predictor ``eps_hat(mu, t)`` for flat continuous data.
- :func:`eps_to_data`: ``x_hat = mu/gamma - sqrt((1-gamma)/gamma) eps_hat`` (``x_hat = 0`` below
  t = 1e-6, clipped to [-1, 1]), the denoiser every continuous sampler takes.
- :class:`DiscreteMLP`: ``p(theta, t)`` for short sequences (input ``2 theta - 1`` and ``2t - 1`` as
  in the upstream ``TextInputAdapter``), returning class probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from bfn_solver.ops import class_softmax
from bfn_solver.schedules import ContinuousSchedule

__all__ = ["ContinuousMLP", "DiscreteMLP", "eps_to_data"]


def _time_features(t: torch.Tensor, n: int = 16) -> torch.Tensor:
    freqs = torch.exp(torch.linspace(0, math.log(200.0), n // 2, device=t.device, dtype=t.dtype))
    a = t[:, None] * freqs[None]
    return torch.cat([torch.sin(a), torch.cos(a), 2 * t[:, None] - 1], -1)


class ContinuousMLP(nn.Module):
    """``eps_hat(mu, t)``: an MLP with Fourier time features (dim -> dim)."""

    def __init__(self, dim: int, hidden: int = 256, layers: int = 3) -> None:
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden, "layers": layers}
        mods: list[nn.Module] = [nn.Linear(dim + 17, hidden), nn.SiLU()]
        for _ in range(layers - 1):
            mods += [nn.Linear(hidden, hidden), nn.SiLU()]
        mods.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*mods)

    def forward(self, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([mu, _time_features(t.to(mu.dtype))], -1))


def eps_to_data(
    eps_model: Callable,
    schedule: ContinuousSchedule,
    clip: tuple[float, float] | None = (-1.0, 1.0),
) -> Callable:
    """Wrap ``eps_model(mu, t)`` as a data-prediction denoiser ``x_hat(mu, t)`` (upstream
    ``noise_pred_params_to_data_pred_params``). The returned function carries ``schedule`` as
    its ``.schedule`` attribute, so samplers use it by default and refuse another."""

    def denoiser(mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_model(mu, t)
        g = schedule.tensor("gamma", t.double()).clamp_min(1e-12)
        shape = (-1,) + (1,) * (mu.dim() - 1)
        a = (1.0 / g).to(mu.dtype).view(shape)
        b = torch.sqrt((1 - g) / g).to(mu.dtype).view(shape)
        x = a * mu - b * eps
        x = torch.where((t < 1e-6).view(shape), torch.zeros_like(x), x)
        return x.clamp(*clip) if clip is not None else x

    denoiser.schedule = schedule  # travels with it: samplers refuse another one
    return denoiser


class DiscreteMLP(nn.Module):
    """``p(theta, t)`` for sequences (batch, L, K): an MLP over the flattened input."""

    def __init__(self, length: int, num_classes: int, hidden: int = 512, layers: int = 3) -> None:
        super().__init__()
        self.length, self.num_classes = length, num_classes
        self.config = {
            "length": length,
            "num_classes": num_classes,
            "hidden": hidden,
            "layers": layers,
        }
        d = length * num_classes
        mods: list[nn.Module] = [nn.Linear(d + 17, hidden), nn.SiLU()]
        for _ in range(layers - 1):
            mods += [nn.Linear(hidden, hidden), nn.SiLU()]
        mods.append(nn.Linear(hidden, d))
        self.net = nn.Sequential(*mods)

    def forward(self, theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = theta.shape[0]
        h = torch.cat([(2 * theta - 1).flatten(1), _time_features(t.to(theta.dtype))], -1)
        return class_softmax(self.net(h).view(b, self.length, self.num_classes))
