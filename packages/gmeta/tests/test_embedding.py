"""Row-sharded table: init independent of sharding, optimiser rules vs torch, misuse errors."""

from __future__ import annotations

import pytest
import torch
from gmeta.embedding import RowOptimizerConfig, RowShardedEmbedding, init_rows


def test_init_is_a_function_of_row_and_seed():
    ids = torch.tensor([5000, 3, 4096, 4095, 9])
    a = init_rows(ids, 4, seed=1, std=0.1)
    b = init_rows(torch.arange(10000), 4, seed=1, std=0.1)[ids]
    assert torch.equal(a, b)
    assert not torch.equal(a, init_rows(ids, 4, seed=2, std=0.1))


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "adam"])
def test_row_optimizer_matches_torch(kind):
    torch.manual_seed(0)
    n, d = 20, 3
    tab = RowShardedEmbedding(
        n, d, optimizer=RowOptimizerConfig(kind, lr=0.05), dtype=torch.float64
    )
    ref = torch.nn.Parameter(tab.weight.clone())
    if kind == "sgd":
        opt = torch.optim.SGD([ref], lr=0.05)
    elif kind == "adagrad":
        opt = torch.optim.Adagrad([ref], lr=0.05, eps=1e-10)
    else:
        opt = torch.optim.SparseAdam([ref], lr=0.05)
    for step in range(4):
        ids = torch.unique(torch.randint(0, n, (7,)))
        _rows, h = tab.lookup(ids)
        g = torch.randn(len(ids), d, dtype=torch.float64)
        tab.push_grads(h, g, scale=0.5)
        dense = torch.zeros(n, d, dtype=torch.float64)
        dense[ids] = g * 0.5
        ref.grad = dense
        if kind == "adam":
            ref.grad = torch.sparse_coo_tensor(
                ids.unsqueeze(0), g * 0.5, (n, d), check_invariants=True
            )
        opt.step()
        assert torch.allclose(tab.weight, ref.detach(), atol=1e-14, rtol=0), (kind, step)


def test_lookup_returns_rows_in_request_order():
    tab = RowShardedEmbedding(50, 2, dtype=torch.float64)
    ids = torch.tensor([7, 3, 42, 0])
    rows, _ = tab.lookup(ids)
    assert torch.equal(rows.detach(), tab.full_weight()[ids])
    assert rows.requires_grad and rows.is_leaf


def test_lookup_misuse_errors():
    tab = RowShardedEmbedding(10, 2)
    with pytest.raises(IndexError, match="outside the table"):
        tab.lookup(torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="unique"):
        tab.lookup(torch.tensor([3, 3]))
    with pytest.raises(TypeError, match="int64"):
        tab.lookup(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="grad_mask"):
        tab.lookup(torch.tensor([1, 2]), torch.tensor([1, 0]))


def test_push_misuse_errors_leave_the_table_unchanged():
    tab = RowShardedEmbedding(10, 2, optimizer=RowOptimizerConfig("sgd", 0.1))
    ids = torch.tensor([1, 4])
    _, h = tab.lookup(ids)
    _, h2 = tab.lookup(torch.tensor([2]))
    w0 = tab.weight.clone()
    with pytest.raises(ValueError, match="shape"):
        tab.push_grads(h, torch.ones(3, 2))
    with pytest.raises(FloatingPointError):
        tab.push_grads(h, torch.tensor([[1.0, float("nan")], [0.0, 0.0]]))
    assert torch.equal(w0, tab.weight)
    tab.push_grads(h, torch.ones(2, 2))
    assert not torch.equal(w0, tab.weight)
    with pytest.raises(RuntimeError, match="already pushed"):
        tab.push_grads(h, torch.ones(2, 2))
    with pytest.raises(RuntimeError, match="updated after this lookup"):
        tab.push_grads(h2, torch.ones(1, 2))


def test_rows_outside_grad_mask_are_not_applied():
    tab = RowShardedEmbedding(10, 2, optimizer=RowOptimizerConfig("sgd", 1.0), dtype=torch.float64)
    w0 = tab.weight.clone()
    ids = torch.tensor([1, 4, 6])
    _, h = tab.lookup(ids, torch.tensor([True, False, True]))
    tab.push_grads(h, torch.ones(3, 2, dtype=torch.float64))
    changed = (tab.weight != w0).any(1).nonzero().flatten().tolist()
    assert changed == [1, 6]


def test_load_shards_checks_coverage_and_shape():
    tab = RowShardedEmbedding(10, 2)
    sd = tab.state_dict()
    other = RowShardedEmbedding(10, 2, seed=3)
    other.load_shards([sd])
    assert torch.equal(other.weight, tab.weight)
    half = dict(sd, global_ids=sd["global_ids"][:5], weight=sd["weight"][:5])
    half["state"] = {k: v[:5] for k, v in sd["state"].items()}
    with pytest.raises(ValueError, match="cover"):
        other.load_shards([half])
    with pytest.raises(ValueError, match="table"):
        RowShardedEmbedding(11, 2).load_shards([sd])


def test_config_validation():
    with pytest.raises(ValueError, match="row optimizer"):
        RowOptimizerConfig("rmsprop")
    with pytest.raises(ValueError, match="lr"):
        RowOptimizerConfig("sgd", lr=-1)
    with pytest.raises(ValueError, match="sharding"):
        RowShardedEmbedding(10, 2, sharding="hash")
    with pytest.raises(ValueError, match="num_rows"):
        RowShardedEmbedding(0, 2)
