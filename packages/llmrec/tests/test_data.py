import numpy as np
import pandas as pd
import pytest
from llmrec import (
    DataError,
    PrepConfig,
    RecData,
    build_examples,
    clean_title,
    history_subsets,
    kcore_filter,
    prepare,
    validate_interactions,
)


def _tables(rows, titles):
    inter = pd.DataFrame(rows, columns=["user", "item", "ts", "domain"])
    items = pd.DataFrame(
        [(i, d, t) for i, (d, t) in titles.items()], columns=["item", "domain", "title"]
    )
    return inter, items


def test_kcore_invariant_holds_on_merged_data(small_data):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {"user": rng.integers(0, 50, 600).astype(str), "item": rng.integers(0, 80, 600).astype(str)}
    )
    out = kcore_filter(df, 5)
    assert len(out) > 0
    assert out["user"].value_counts().min() >= 5
    assert out["item"].value_counts().min() >= 5
    # maximal: nothing that satisfies the core was removed (the 5-core is unique)
    assert len(kcore_filter(out, 5)) == len(out)
    # the prepared data satisfies the k-core on the merged (all-domain) sequences
    counts = np.bincount(np.concatenate(small_data.seqs), minlength=small_data.n_items + 1)
    assert counts[1:].min() >= 3
    assert min(len(s) for s in small_data.seqs) >= 3


def test_numeric_timestamp_ordering_mixes_9_and_10_digit_epochs():
    # 999_999_999 (2001) must come before 1_000_000_000, which string sorting gets wrong
    rows = [
        ("u", "b", 1_000_000_000, "d"),
        ("u", "a", 999_999_999, "d"),
        ("u", "c", 1_000_000_001, "d"),
    ]
    inter, items = _tables(rows, {k: ("d", f"title {k}") for k in "abc"})
    data = prepare([(inter, items)], PrepConfig(kcore=1))
    order = [data.item_ids[i - 1] for i in data.seqs[0]]
    assert order == ["a", "b", "c"]
    # string timestamps are refused, not sorted as text
    inter["ts"] = inter["ts"].astype(str) + "x"
    with pytest.raises(DataError, match="not an integer"):
        validate_interactions(inter)


def test_equal_timestamps_keep_input_order_and_consecutive_duplicates_drop():
    rows = [("u", "a", 5, "d"), ("u", "b", 5, "d"), ("u", "b", 6, "d"), ("u", "c", 7, "d")]
    inter, items = _tables(rows, {k: ("d", f"t {k}") for k in "abc"})
    data = prepare([(inter, items)], PrepConfig(kcore=1))
    assert [data.item_ids[i - 1] for i in data.seqs[0]] == ["a", "b", "c"]
    assert data.stats["consecutive_duplicates"] == 1


def test_leave_one_out_and_every_prefix(small_data):
    d = small_data
    tr = build_examples(d, "train")
    va = build_examples(d, "valid")
    te = build_examples(d, "test")
    assert len(te) == len(va) == d.n_users
    assert len(tr) == sum(len(s) - 3 for s in d.seqs)  # every prefix with >= 1 history item
    for k in range(0, len(te), 37):
        u = te.users[k]
        s = d.seqs[u]
        assert te.targets[k] == s[-1] and va.targets[k] == s[-2]
        h = te.hist[k][te.hist[k] > 0]
        assert list(h) == list(s[:-1][-10:])
    # no leakage: a training example only sees items before its target in the user's sequence
    rows = np.flatnonzero(tr.users == tr.users[0])
    s = d.seqs[tr.users[0]]
    for j, r in enumerate(rows):
        assert tr.targets[r] == s[j + 1]
        assert list(tr.hist[r][tr.hist[r] > 0]) == list(s[: j + 1][-10:])
    assert not set(tr.users.tolist()) - set(range(d.n_users))


def test_domain_mixing_keeps_only_target_domain_history(small_data):
    d = small_data
    ex = build_examples(d, "train", mix="domain")
    td = d.item_domain[ex.targets][:, None]
    assert ((d.item_domain[ex.hist] == td) | (ex.hist == 0)).all()
    single = build_examples(d, "train", mix="single", domain=d.domains[0])
    assert (d.item_domain[single.targets] == 0).all()
    te = build_examples(d, "test", mix="domain")
    assert len(te) == d.n_users  # evaluation keeps users with an empty in-domain history
    mixed = build_examples(d, "test")
    sub = history_subsets(d, mixed)
    # "same" users: the in-domain history is the mixed history
    assert np.array_equal(te.hist[sub["same"]], mixed.hist[sub["same"]])
    # "diff" users: nothing of the target's domain inside the mixed window
    td = d.item_domain[mixed.targets][sub["diff"]][:, None]
    assert not (
        (d.item_domain[mixed.hist[sub["diff"]]] == td) & (mixed.hist[sub["diff"]] > 0)
    ).any()
    assert sum(int(m.sum()) for m in sub.values()) == d.n_users


def test_min_history_zero_adds_exactly_the_empty_history_examples(small_data):
    d = small_data
    for mix in ("user", "domain"):
        one = build_examples(d, "train", mix=mix)
        zero = build_examples(d, "train", mix=mix, min_history=0)
        empty = (zero.hist == 0).all(1)
        assert not (one.hist == 0).all(1).any()
        assert len(zero) - len(one) == int(empty.sum()) > 0
        # the non-empty examples are the min_history=1 examples, in the same order
        np.testing.assert_array_equal(zero.targets[~empty], one.targets)
        np.testing.assert_array_equal(zero.hist[~empty], one.hist)
    # user mix: one more example per user, the first item of the sequence
    zero = build_examples(d, "train", min_history=0)
    assert len(zero) == sum(len(s) - 2 for s in d.seqs)
    first = (zero.hist == 0).all(1)
    assert [int(t) for t in zero.targets[first]] == [int(s[0]) for s in d.seqs]
    # domain mix: one empty example per (user, domain) whose first in-domain item is a
    # training target; every mixing strategy then trains on the same targets
    dom = build_examples(d, "train", mix="domain", min_history=0)
    pairs = sorted(zip(dom.users, dom.targets, strict=True))
    assert pairs == sorted(zip(zero.users, zero.targets, strict=True))
    with pytest.raises(ValueError, match="min_history"):
        build_examples(d, "train", min_history=2)


def test_zero_shot_domain_never_in_training(small_data):
    d = small_data
    tr = build_examples(d, "train", exclude_domains=["home"])
    h = d.domain_index("home")
    assert not (d.item_domain[tr.targets] == h).any()
    assert not (d.item_domain[tr.hist[tr.hist > 0]] == h).any()


def test_title_cleaning_and_missing_title_rules():
    assert clean_title("Tom &amp; Jerry <b>DVD</b>\n  set") == "Tom & Jerry DVD set"
    assert clean_title(None) is None and clean_title("  ") is None and clean_title("None") is None
    assert clean_title("x" * 2000) is None
    rows = [(u, i, t, "d") for u in ("u1", "u2") for t, i in enumerate("abcd")]
    titles = {"a": ("d", "ok a"), "b": ("d", None), "c": ("d", "ok c"), "d": ("d", "ok d")}
    inter, items = _tables(rows, titles)
    data = prepare([(inter, items)], PrepConfig(kcore=1))
    assert data.item_ids == ["a", "c", "d"] and data.stats["items_missing_title"] == 1
    with pytest.raises(DataError, match="no usable title"):
        prepare([(inter, items)], PrepConfig(kcore=1, missing_title="error"))
    data = prepare([(inter, items)], PrepConfig(kcore=1, missing_title="placeholder"))
    assert data.title(data.item_index("b")) == "None"


def test_bad_inputs_get_clear_errors(small_data, tmp_path):
    with pytest.raises(DataError, match="unknown item id"):
        small_data.item_index("no-such-item")
    with pytest.raises(DataError, match="lacks column"):
        validate_interactions(pd.DataFrame({"user": [1], "item": [2]}))
    with pytest.raises(DataError, match="no interactions left"):
        inter, items = _tables([("u", "a", 1, "d")], {"a": ("d", "t")})
        prepare([(inter, items)], PrepConfig(kcore=5))
    with pytest.raises(ValueError, match="kcore"):
        PrepConfig(kcore=0)
    with pytest.raises(ValueError, match="needs domain"):
        build_examples(small_data, "train", mix="single")
    with pytest.raises(DataError, match="unknown domain"):
        build_examples(small_data, "train", mix="single", domain="nope")


def test_recdata_roundtrip_and_corruption(small_data, tmp_path):
    small_data.save(tmp_path / "d")
    back = RecData.load(tmp_path / "d")
    assert back.fingerprint() == small_data.fingerprint()
    assert all(np.array_equal(a, b) for a, b in zip(back.seqs, small_data.seqs, strict=True))
    p = tmp_path / "d" / "items.parquet"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError):
        RecData.load(tmp_path / "d")
    with pytest.raises(DataError, match="not a prepared data set"):
        RecData.load(tmp_path / "missing")
