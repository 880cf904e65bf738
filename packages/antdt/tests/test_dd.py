"""AntDT-DD helpers in one process (the multi-process checks are in test_distributed.py)."""

from __future__ import annotations

import pytest
import torch
from antdt.dd import dd_backward, loss_scale, micro_batches
from antdt.job import sum_mse
from refimpl import tiny_data, tiny_model

B = 32


def _reference():
    x, y = tiny_data(B)
    m = tiny_model()
    ((m(x) - y) ** 2).mean().backward()
    return [p.grad.reshape(-1) for p in m.parameters()]


def test_single_process_sum_reduce_matches_reference():
    x, y = tiny_data(B)
    m = tiny_model()
    dd_backward(m, sum_mse, x, y, global_batch=B, world_size=1, max_micro_batch=5)
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
