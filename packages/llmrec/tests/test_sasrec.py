import numpy as np
import pytest
import torch
from llmrec import SASRec, SASRecConfig, build_examples, train_sasrec
from llmrec.evaluate import evaluate


def test_causal_and_padding_invariant():
    torch.manual_seed(0)
    m = SASRec(20, SASRecConfig(hidden=16, max_len=8, dropout=0.0)).eval()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    other = seq.clone()
    other[0, -1] = 9  # change only the last item
    with torch.no_grad():
        a, b = m.hidden(seq), m.hidden(other)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])  # earlier positions never see the future
    assert not torch.allclose(a[:, -1], b[:, -1])
    # short histories are left padded to max_len, as in training
    u = m.user_vectors(np.array([[5, 6, 7, 8]]))
    torch.testing.assert_close(u, m.hidden(torch.tensor([[0, 0, 0, 0, 5, 6, 7, 8]]))[:, -1])
    with pytest.raises(ValueError, match="max_len"):
        m.hidden(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(dropout=1.0)


def test_learns_a_deterministic_successor_pattern(small_data):
    d = small_data
    model = train_sasrec(d, SASRecConfig(hidden=32, epochs=25, dropout=0.2, seed=0))
    te = build_examples(d, "valid")
    from llmrec import sample_eval_negatives

    negs = sample_eval_negatives(d, te.users, te.targets, 20)
    res = evaluate(model, d, te, negatives=negs, groups={"all": np.ones(len(te), bool)})
    r10 = res["groups"]["all"]["recall@10"]
    # chance with ~20 same-domain candidates is about 0.5; the co-purchase and popularity
    # signals are learnable from IDs
    chance = np.mean(np.minimum(10, (negs > 0).sum(1) + 1) / ((negs > 0).sum(1) + 1))
    assert r10 > chance + 0.05
