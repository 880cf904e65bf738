import math

import numpy as np
import pytest
import torch
from llmrec import metric_table, mrr, ndcg_at_k, rank_of_positive, recall_at_k


def _brute(pos, negs, k):
    """Sort every candidate list (positive first on ties = optimistic; last = pessimistic)."""
    rec, ndcg, rr = [], [], []
    for p, ns in zip(pos, negs, strict=True):
        cands = [(float(p), 1)] + [(float(x), 0) for x in ns]
        cands.sort(key=lambda c: (-c[0], c[1]))  # ties: negatives before the positive
        r = [c[1] for c in cands].index(1)
        rec.append(r < k)
        ndcg.append(1 / math.log2(r + 2) if r < k else 0.0)
        rr.append(1 / (r + 1))
    return np.mean(rec), np.mean(ndcg), np.mean(rr)


def test_metrics_match_brute_force_sorting():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(300, generator=g)
    neg = torch.randn(300, 50, generator=g)
    neg[:20, 3] = pos[:20]  # some exact ties
    ranks = rank_of_positive(pos, neg)
    for k in (1, 5, 10):
        r, n, _ = _brute(pos.numpy(), neg.numpy(), k)
        assert recall_at_k(ranks, k) == pytest.approx(r)
        assert ndcg_at_k(ranks, k) == pytest.approx(n)
    assert mrr(ranks) == pytest.approx(_brute(pos.numpy(), neg.numpy(), 1)[2])
    t = metric_table(ranks, ks=(1, 10))
    assert t["ndcg@1"] == pytest.approx(t["recall@1"])  # one relevant item
    assert t["n"] == 300


def test_ties_and_masking():
    pos = torch.tensor([1.0, 1.0])
    neg = torch.tensor([[1.0, 2.0, 0.0], [1.0, 1.0, 5.0]])
    assert rank_of_positive(pos, neg).tolist() == [2, 3]
    assert rank_of_positive(pos, neg, ties="optimistic").tolist() == [1, 1]
    assert rank_of_positive(pos, neg, ties="average").tolist() == [1.5, 2.0]
    valid = torch.tensor([[True, False, True], [False, False, True]])
    assert rank_of_positive(pos, neg, valid).tolist() == [1, 1]
    with pytest.raises(ValueError, match="ties"):
        rank_of_positive(pos, neg, ties="random")
    with pytest.raises(ValueError, match="shapes"):
        rank_of_positive(pos, neg[:1])


def test_random_scorer_gets_chance_recall():
    g = torch.Generator().manual_seed(1)
    pos = torch.rand(20000, generator=g)
    neg = torch.rand(20000, 1000, generator=g)
    r10 = recall_at_k(rank_of_positive(pos, neg), 10)
    # expected 10/1001; binomial std ~ 0.0007
    assert abs(r10 - 10 / 1001) < 0.003
