"""AntDT-DD helpers in one process (the multi-process checks are in test_distributed.py)."""

from __future__ import annotations

import pytest
import torch
from antdt.dd import dd_backward, loss_scale, micro_batches

B = 32


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 5, generator=g, dtype=torch.float64)
    y = torch.randn(B, 1, generator=g, dtype=torch.float64)
    return x, y


def _model():
    torch.manual_seed(7)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)
    ).double()


def _sum_mse(p, y):
    return ((p - y) ** 2).sum()


def _reference():
    x, y = _data()
    m = _model()
    ((m(x) - y) ** 2).mean().backward()
    return [p.grad.reshape(-1) for p in m.parameters()]


def test_single_process_sum_reduce_matches_reference():
    x, y = _data()
    m = _model()
    dd_backward(m, _sum_mse, x, y, global_batch=B, world_size=1, max_micro_batch=5)
    for p, r in zip(m.parameters(), _reference(), strict=True):
        torch.testing.assert_close(p.grad.reshape(-1), r, rtol=0, atol=1e-13)


def test_helpers_validate():
    assert loss_scale(10, 2) == 0.2 and loss_scale(10, 2, ddp_average=False) == 0.1
    assert micro_batches(0, 3) == [(0, 0)]
    assert micro_batches(7, 3) == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError):
        micro_batches(5, 0)
    with pytest.raises(ValueError):
        loss_scale(0, 1)
