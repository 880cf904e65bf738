"""The small-K class-axis operations agree with PyTorch's and draw from the right distribution."""

from __future__ import annotations

import pytest
import torch
from bfn_solver.ops import categorical_one_hot, class_softmax, uses_small_k_path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [2, 3, 6, 15, 16, 27, 40])
@pytest.mark.parametrize("scale", [1.0, 30.0, 500.0])
def test_class_softmax_equals_torch(dtype, k, scale):
    y = scale * torch.randn(64, 5, k, dtype=dtype, generator=torch.Generator().manual_seed(k))
    got, want = class_softmax(y), torch.softmax(y, -1)
    assert got.dtype == dtype and got.shape == y.shape
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_class_softmax_path_choice():
    assert uses_small_k_path(torch.zeros(3, 6))
    assert not uses_small_k_path(torch.zeros(3, 16))  # float32: torch's own kernel is fast
    assert uses_small_k_path(torch.zeros(3, 16, dtype=torch.float64))
    assert not uses_small_k_path(torch.zeros(0, 6))
    assert not uses_small_k_path(torch.zeros(3, 6, dtype=torch.float16))


def test_class_softmax_large_logits_and_rows_far_apart():
    # one row near +1e4, one near -1e4: a global shift would underflow one of them
    y = torch.tensor([[1e4, 1e4 + 1.0, 1e4 - 2.0], [-1e4, -1e4 + 3.0, -1e4]])
    torch.testing.assert_close(class_softmax(y), torch.softmax(y, -1))
    y[0, 0] = float("nan")
    assert torch.isnan(class_softmax(y)[0]).all() and torch.isfinite(class_softmax(y)[1]).all()


def test_class_softmax_gradient_matches_torch():
    y = torch.randn(8, 4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 4, 6, dtype=torch.float64)
    (g1,) = torch.autograd.grad((class_softmax(y) * w).sum(), y)
    (g2,) = torch.autograd.grad((torch.softmax(y, -1) * w).sum(), y)
    torch.testing.assert_close(g1, g2)
    assert torch.autograd.gradcheck(class_softmax, (y[:2, :2].detach().requires_grad_(),))


@pytest.mark.parametrize("k", [2, 6, 40])
def test_categorical_one_hot_distribution(k):
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(3, k, generator=gen) ** 3
    p[:, 1] = 0.0  # a zero-probability class is never drawn
    n = 40_000
    draws = categorical_one_hot(p.expand(n, 3, k).contiguous() * 7.0, gen)  # unnormalised
    assert ((draws == 0) | (draws == 1)).all() and (draws.sum(-1) == 1).all()
    freq = draws.mean(0)
    pn = p / p.sum(-1, keepdim=True)
    assert freq[:, 1].sum() == 0
    # binomial standard error of each frequency; 5 sigma
    se = (pn * (1 - pn) / n).sqrt()
    assert ((freq - pn).abs() <= 5 * se + 1e-9).all()


def test_categorical_one_hot_degenerate_rows_take_the_last_class():
    p = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = categorical_one_hot(p, torch.Generator().manual_seed(1))
    assert out.tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_categorical_one_hot_same_draws_on_both_paths():
    """The matrix-product path and the cumsum path pick the same class for the same uniforms."""
    p = torch.rand(500, 4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = categorical_one_hot(p, torch.Generator().manual_seed(3))
    # the generic path: a class axis too wide for the small-K path, padded with zeros
    wide = torch.cat([p, torch.zeros(500, 4, 40, dtype=torch.float64)], -1)
    assert not uses_small_k_path(wide)
    c = categorical_one_hot(wide, torch.Generator().manual_seed(3))
    assert torch.equal(c[..., :6], a) and c[..., 6:].sum() == 0
