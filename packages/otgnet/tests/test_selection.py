import itertools

import numpy as np
import pytest
import torch
from otgnet.replay import greedy_select, head_gradient_scores, node_importance
from otgnet.replay.selection import coverage_objective


def test_head_gradient_scores_match_autograd():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(12, 5, generator=g, dtype=torch.float64)
    lin = torch.nn.Linear(5, 4).double()
    y = torch.randint(0, 4, (12,), generator=g)
    grads = []
    for i in range(12):
        lin.zero_grad()
        torch.nn.functional.cross_entropy(lin(h[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([lin.weight.grad.ravel(), lin.bias.grad.ravel()]))
    grads = torch.stack(grads)
    want = grads @ grads.mean(0)
    with torch.no_grad():
        got = head_gradient_scores(h, torch.softmax(lin(h), 1), y)
    assert torch.allclose(got, want, atol=1e-10)


def test_node_importance_first_occurrence_sign_and_range():
    imp = node_importance(np.array([3, 1, 3, 0]), np.array([2.0, -1.0, 9.0, 0.5]), 5)
    assert imp.tolist() == [0.5, 0.0, 0.0, 1.0, 0.0]  # node 3 keeps its first score (2.0)
    off = node_importance(
        np.array([3, 1, 3, 0]), np.array([2.0, -1.0, 9.0, 0.5]), 5, sign="official"
    )
    assert off[1] == 1.0 and off[3] == 0.0
    with pytest.raises(ValueError):
        node_importance(np.array([0]), np.array([1.0]), 1, sign="bad")


def test_gamma_zero_is_top_k():
    rng = np.random.default_rng(0)
    imp = rng.random(30)
    emb = rng.normal(size=(30, 3))
    sel = greedy_select(imp, emb, 5, gamma=0.0)
    assert set(sel.tolist()) == set(np.argsort(-imp)[:5].tolist())


@pytest.mark.parametrize("seed", range(4))
def test_greedy_near_optimal_and_objective_submodular(seed):
    rng = np.random.default_rng(seed)
    n, k, gamma = 9, 3, 5.0
    imp = rng.random(n)
    emb = rng.normal(size=(n, 2))
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    r = float(np.quantile(d[~np.eye(n, dtype=bool)], 0.2))
    sel = greedy_select(imp, emb, k, gamma=gamma, radius=r, top=None)
    f = lambda s: coverage_objective(s, imp, emb, gamma, r)  # noqa: E731
    best = max(f(s) for s in itertools.combinations(range(n), k))
    assert f(sel) >= (1 - 1 / np.e) * best - 1e-12
    # monotone and submodular on random chains A < B, element x outside B
    for _ in range(20):
        b = set(rng.choice(n, 4, replace=False).tolist())
        a = set(list(b)[:2])
        x = next(i for i in range(n) if i not in b)
        assert f(a | {x}) - f(a) >= f(b | {x}) - f(b) - 1e-12
        assert f(b) >= f(a) - 1e-12


def test_diversity_spreads_the_choice():
    # two tight clusters; the most important points all sit in one of them
    emb = np.concatenate([np.zeros((5, 2)) + 0.01 * np.arange(5)[:, None], np.ones((5, 2)) * 10])
    imp = np.array([1.0, 0.99, 0.98, 0.97, 0.96, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert set(greedy_select(imp, emb, 2, gamma=0.0).tolist()) <= set(range(5))
    sel = greedy_select(imp, emb, 2, gamma=20.0, radius=1.0)
    assert any(i >= 5 for i in sel)
    with pytest.raises(ValueError):
        greedy_select(imp, emb[:3], 2)
