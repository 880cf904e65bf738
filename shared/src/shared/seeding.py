"""Seeding of every random number generator a package touches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_everything"]


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device).

    Also sets ``PYTHONHASHSEED`` for child processes. With ``deterministic=True`` torch is asked
    to use deterministic algorithms (raising where none exists). Returns a fresh
    ``torch.Generator`` seeded with ``seed`` for code that prefers an explicit generator.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed % 2**32)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    g = torch.Generator()
    g.manual_seed(seed)
    return g
