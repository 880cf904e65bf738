import numpy as np
import pytest
from llmrec import (
    DataError,
    build_examples,
    load_negatives,
    sample_eval_negatives,
    sample_train_negatives,
    save_negatives,
)


def test_train_negatives_same_domain_never_positive_no_repeats(small_data):
    d = small_data
    ex = build_examples(d, "train")
    rng = np.random.default_rng(0)
    negs = sample_train_negatives(rng, ex.targets, d.item_domain, d.domain_items(), 5)
    assert negs.shape == (len(ex), 5)
    assert not (negs == ex.targets[:, None]).any()
    assert (d.item_domain[negs] == d.item_domain[ex.targets][:, None]).all()
    assert all(len(set(r)) == 5 for r in negs)
    # every other item of the domain is reachable (uniform over domain minus positive)
    t = np.repeat(ex.targets[:1], 4000)
    n = sample_train_negatives(rng, t, d.item_domain, d.domain_items(), 1).ravel()
    dom = d.domain_items()[d.item_domain[t[0]]]
    assert set(n.tolist()) == set(dom.tolist()) - {int(t[0])}
    # more negatives than the domain has: drawn with replacement, still never the positive
    big = sample_train_negatives(rng, ex.targets[:5], d.item_domain, d.domain_items(), 500)
    assert big.shape == (5, 500) and not (big == ex.targets[:5, None]).any()
    assert (d.item_domain[big] == d.item_domain[ex.targets[:5]][:, None]).all()


def test_eval_negatives_exclude_positive_fixed_and_persisted(small_data, tmp_path):
    d = small_data
    te = build_examples(d, "test")
    n = 15
    negs = sample_eval_negatives(d, te.users, te.targets, n, seed=42)
    assert not (negs == te.targets[:, None]).any()
    real = negs > 0
    assert (
        d.item_domain[negs][real]
        == np.broadcast_to(d.item_domain[te.targets][:, None], negs.shape)[real]
    ).all()
    # small domains: all other items, padded with 0
    sizes = np.array([len(x) for x in d.domain_items()])[d.item_domain[te.targets]]
    assert (real.sum(1) == np.minimum(n, sizes - 1)).all()
    # deterministic, and a user's negatives do not depend on who else is evaluated
    again = sample_eval_negatives(d, te.users[5:], te.targets[5:], n, seed=42)
    assert np.array_equal(again, negs[5:])
    assert not np.array_equal(sample_eval_negatives(d, te.users, te.targets, n, seed=7), negs)
    path = save_negatives(tmp_path / "neg.parquet", d, te.users, te.targets, negs)
    assert np.array_equal(load_negatives(path, d, te.users, te.targets), negs)
    with pytest.raises(DataError, match="other users or targets"):
        load_negatives(path, d, te.users[1:], te.targets[1:])


def test_official_protocol_can_include_the_positive(small_data):
    d = small_data
    te = build_examples(d, "test")
    negs = sample_eval_negatives(d, te.users, te.targets, 10, allow_positive=True)
    # domains here have ~30 items: P(positive among 10 drawn) ~ 1/3
    share = (negs == te.targets[:, None]).any(1).mean()
    assert 0.1 < share < 0.7
