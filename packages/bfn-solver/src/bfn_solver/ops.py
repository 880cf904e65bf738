"""Class-axis operations for discrete BFNs that are fast for the small K of BFN text on CPU.

PyTorch's CPU ``softmax`` and ``cumsum`` vectorise along the last axis, so with K < 16 classes
(one AVX-512 register of float32) they fall to a slow path: ``torch.softmax`` over a
``(512, 12, 6)`` tensor takes ~310 us on two cores where ``exp`` alone takes ~5 us. The discrete
samplers call a softmax (the network input ``theta = softmax(y)``) and, in the original sampler, a
categorical draw at every step, so this path matters. Here the class-axis reductions are small
matrix products (``e @ ones(K, K)`` is the row sum already broadcast over the row), which MKL runs
at full width.

Both functions fall back to the plain PyTorch form on other devices, for K at or above the
vectorisation width, and for dtypes other than float32/float64.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

__all__ = ["categorical_one_hot", "class_softmax", "uses_small_k_path"]

# exp(y) is finite and normal for |y| below these (float32 overflows at 88.7, float64 at 709.8)
_EXP_SAFE = {torch.float32: 80.0, torch.float64: 700.0}
# K below which PyTorch's last-axis kernels are slow on CPU (measured, torch 2.13: float32
# softmax 280 us at K = 12 vs 20 us at K = 16; float64 141 us at K = 16 vs 44 us here)
_SMALL_K = {torch.float32: 16, torch.float64: 32}


def uses_small_k_path(x: torch.Tensor) -> bool:
    """True when :func:`class_softmax` and :func:`categorical_one_hot` take the matrix-product path."""
    return (
        x.device.type == "cpu"
        and x.dtype in _SMALL_K
        and x.dim() >= 1
        and x.numel() > 0
        and x.shape[-1] < _SMALL_K[x.dtype]
    )


@lru_cache(maxsize=64)
def _mats(k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ones(K, K), upper-triangular ones (prefix sums), first differences) on CPU."""
    ones = torch.ones(k, k, dtype=dtype)
    upper = torch.triu(ones)  # (p @ upper)_j = sum_{i <= j} p_i
    diff = torch.eye(k, dtype=dtype) - torch.diag(torch.ones(k - 1, dtype=dtype), 1)
    return ones, upper, diff  # (s @ diff)_j = s_j - s_{j-1}


def class_softmax(y: torch.Tensor) -> torch.Tensor:
    """``softmax(y, -1)``; equal to ``torch.softmax`` up to float rounding, differentiable.

    On the small-K CPU path the max is subtracted only when some ``|y|`` is large enough for
    ``exp`` to overflow or leave the normal range (one global ``aminmax`` decides); otherwise
    ``exp(y) / (exp(y) @ ones(K, K))``.
    """
    if not uses_small_k_path(y):
        return torch.softmax(y, -1)
    k = y.shape[-1]
    lo, hi = torch.aminmax(y.detach())
    if max(-float(lo), float(hi)) < _EXP_SAFE[y.dtype] - math.log(k):
        e = torch.exp(y)
    else:  # NaN also lands here and propagates
        e = torch.exp(y - y.detach().amax(-1, keepdim=True))
    s = torch.matmul(e, _mats(k, y.dtype)[0])
    if torch.is_grad_enabled() and e.requires_grad:
        return e / s
    return e.div_(s)


def categorical_one_hot(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw from ``Cat(p)`` at every position of the last axis, as a one-hot tensor like ``p``.

    ``p`` must be non-negative; it need not be normalised (each row is scaled by its own total).
    Inverse CDF with one uniform per position: the class is the first ``j`` whose prefix sum
    exceeds ``u * total``; a row whose prefix sums never do (rounding at ``u`` near 1, or an
    all-zero row) takes the last class.
    """
    u = torch.rand((*p.shape[:-1], 1), generator=generator, device=p.device, dtype=p.dtype)
    if uses_small_k_path(p):
        ones, upper, diff = _mats(p.shape[-1], p.dtype)
        cdf = torch.matmul(p, upper)
        thr = torch.matmul(u.mul_(cdf[..., -1:]), ones[:1])  # u * total, broadcast over the row
        step = torch.gt(cdf, thr, out=torch.empty_like(p))  # 0/1 in p's dtype, no bool pass
        step[..., -1] = 1.0
        return torch.matmul(step, diff)
    cdf = p.cumsum(-1)
    idx = (cdf <= u.mul_(cdf[..., -1:])).sum(-1, keepdim=True).clamp_max_(p.shape[-1] - 1)
    return torch.zeros_like(p).scatter_(-1, idx, 1.0)
