"""Time encoding ``cos(dt * omega + phi)`` (official ``models/TimeEncoder.py``).

The official frequencies are ``omega = 10 ** -linspace(0, 9, dim)`` with ``phi = 0``. The official
code registers them with ``nn.Parameter(...).to(device)``: on a GPU that returns a plain tensor, so
they stay *fixed*; on a CPU ``.to`` returns the parameter and they are *trained*. Results depend on
the device there. Here the choice is explicit: ``learnable=False`` (default, as the GPU runs
behaved) or ``True``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TimeEncoding"]


class TimeEncoding(nn.Module):
    def __init__(self, dim: int, learnable: bool = False) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"time encoding dim must be >= 1, got {dim}")
        omega = 10.0 ** -torch.linspace(0, 9, dim)
        phi = torch.zeros(dim)
        if learnable:
            self.omega, self.phi = nn.Parameter(omega), nn.Parameter(phi)
        else:
            self.register_buffer("omega", omega)
            self.register_buffer("phi", phi)
        self.dim = dim

    def forward(self, dt: torch.Tensor) -> torch.Tensor:
        """``(...,)`` time differences -> ``(..., dim)`` encodings."""
        return torch.cos(dt.to(self.omega.dtype).unsqueeze(-1) * self.omega + self.phi)
