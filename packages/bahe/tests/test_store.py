import json
import mmap

import numpy as np
import pytest
import torch
from bahe.lm import pool
from bahe.store import BehaviorStore, StoreCorruptError, StoreError, StoreMismatchError, build_store
from bahe.text import BehaviorCatalog
from conftest import make_lm


@pytest.fixture(scope="module")
def built(tmp_path_factory, synth, tok):
    train, _, _ = synth
    lm = make_lm(tok)
    root = tmp_path_factory.mktemp("s") / "store32"
    store = build_store(train.catalog, lm, root, dtype="float32")
    return lm, store, root


def live_vectors(lm, texts):
    enc = lm.tokenize(texts)
    return pool(
        lm.lower_hidden(enc["input_ids"], enc["attention_mask"]), enc["attention_mask"], lm.pooling
    )


def test_store_round_trip_and_zero_copy(built, synth):
    _lm, store, _root = built
    train, _, _ = synth
    assert len(store) == len(train.catalog)
    # the serving matrix is a read-only memory map of the file: no copy, no owned data
    v = store.vectors
    assert isinstance(v, np.memmap) and not v.flags.owndata and not v.flags.writeable
    base = v
    while getattr(base, "base", None) is not None and not isinstance(base, mmap.mmap):
        base = base.base
    assert isinstance(base, mmap.mmap)
    row = store.vectors[3]
    assert np.shares_memory(row, store.vectors) and not row.flags.owndata
    # the parquet archive holds the same vectors, keys and texts
    arch = store.read_archive()
    keys = np.asarray(arch.column("key").to_numpy())
    vec = np.stack(arch.column("vector").to_numpy(zero_copy_only=False))
    r = store.rows(keys)
    assert (r >= 0).all()
    assert np.array_equal(np.asarray(store.vectors)[r], vec)
    assert store.texts() == {int(k): train.catalog.text(k) for k in keys}
    # unknown keys: -1 rows, zero vectors, or an error
    unknown = np.array([12345, int(store.keys[0])])
    assert store.rows(unknown).tolist()[0] == -1
    got = store.lookup(unknown, missing="zero")
    assert torch.equal(got[0], torch.zeros(store.dim))
    with pytest.raises(KeyError, match="not in the store"):
        store.lookup(unknown)


def test_open_does_not_read_the_vectors(tmp_path, lm):
    from shared import current_rss_bytes

    texts = [f"behaviour number {i} of the catalogue" for i in range(60)]
    store = build_store(texts, lm, tmp_path / "s", dtype="float32")
    # make the file large and rewrite the manifest consistently: opening must not page it in
    big = np.lib.format.open_memmap(
        tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(200_000, store.dim)
    )
    big[:] = 1.0
    big.flush()
    del big
    before = current_rss_bytes()
    m = np.load(tmp_path / "big.npy", mmap_mode="r")
    assert current_rss_bytes() - before < 4 * 2**20  # 25 MB file, nothing copied
    assert not m.flags.owndata


def test_cache_equivalence_fp32_and_fp16(built, tmp_path, synth, tok):
    lm, store, _ = built
    train, _, _ = synth
    texts = train.texts()[:40]
    keys = np.array([train.catalog.add(t) for t in texts])
    live = live_vectors(lm, texts)
    assert torch.allclose(store.lookup(keys), live, atol=1e-6)
    s16 = build_store(train.catalog, lm, tmp_path / "s16", dtype="float16")
    assert s16.vectors.dtype == np.float16
    assert torch.allclose(s16.lookup(keys), live, atol=1e-2)


def test_bahe_user_embedding_stored_equals_live(built, synth):
    from bahe.model import BAHECTR, BAHEConfig

    lm, store, _ = built
    train, _, _ = synth
    m = BAHECTR(lm, store, BAHEConfig(families=train.families, max_behaviors=5))
    m.eval()
    idx = np.arange(6)
    batch = m.featurize(train, idx)
    vec_store = store.gather(batch["rows"].numpy())
    # recompute every behaviour vector with the live lower layers
    live = torch.zeros_like(vec_store)
    for b in range(len(idx)):
        for j, f in enumerate(train.families):
            n = int(train.lengths[f][b])
            texts = [train.catalog.text(k) for k in train.behaviors[f][b, :n]]
            live[b, j, :n] = live_vectors(lm, texts)
    with torch.no_grad():
        u_store = m.user_embedding(vec_store, batch["lengths"])
        u_live = m.user_embedding(live, batch["lengths"])
    assert torch.allclose(u_store, u_live, atol=1e-5)


def test_dedup_encodes_each_unique_behaviour_once(tmp_path, lm, monkeypatch):
    import bahe.store as st

    seen = []
    orig = st._encode

    def counting(lm_, texts, *a, **k):
        seen.extend(texts)
        return orig(lm_, texts, *a, **k)

    monkeypatch.setattr(st, "_encode", counting)
    raw = ["Pay bill", "pay bill", "Pay  bill ", "search x", "search x", "visit y"] * 10
    store = build_store(raw, lm, tmp_path / "s")
    assert len(seen) == len(set(seen)) == 4 == len(store)  # "Pay bill" ≠ "pay bill" (case kept)
    assert store.manifest["stats"]["occurrences"] == 60
    # incremental refresh encodes only the new behaviours, as a new version
    seen.clear()
    store2 = build_store([*raw, "new one", "visit y"], lm, tmp_path / "s", refresh=True)
    assert seen == ["new one"]
    assert store2.version == 2 and len(store2) == 5
    assert [h["added"] for h in store2.manifest["history"]] == [4, 1]
    # old serving files are gone, both archive parts remain
    names = sorted(p.name for p in (tmp_path / "s").iterdir() if p.suffix == ".npy")
    assert names == ["keys-v00002.npy", "vectors-v00002.npy"]
    assert len(store2.manifest["files"]["archive"]) == 2
    old = store.vectors[store.rows(np.array([store.keys[0]]))[0]]
    assert np.array_equal(
        store2.lookup(np.array([store.keys[0]])).numpy()[0], old.astype(np.float32)
    )


def test_existing_store_needs_refresh_or_overwrite(tmp_path, lm):
    build_store(["a b", "c d"], lm, tmp_path / "s")
    with pytest.raises(StoreError, match="refresh=True"):
        build_store(["a b"], lm, tmp_path / "s")
    s = build_store(["x y"], lm, tmp_path / "s", overwrite=True)
    assert len(s) == 1 and s.version == 1


def test_mismatched_model_is_refused(built, tok):
    lm, store, root = built
    BehaviorStore.open(root, expect=lm.identity())
    for other, field in [
        (make_lm(tok, num_lower=1), "num_lower"),
        (make_lm(tok, pooling="cls"), "pooling"),
        (make_lm(tok, seed=7), "model_fingerprint"),
    ]:
        with pytest.raises(StoreMismatchError, match=field):
            BehaviorStore.open(root, expect=other.identity())
    from shared.lm import train_tokenizer

    other_tok = train_tokenizer(["completely different words here"])
    ident = dict(lm.identity())
    from shared.lm import tokenizer_fingerprint

    ident["tokenizer_fingerprint"] = tokenizer_fingerprint(other_tok)
    with pytest.raises(StoreMismatchError, match="tokenizer_fingerprint"):
        store.check(ident)
    from bahe.model import BAHECTR, BAHEConfig

    with pytest.raises(StoreMismatchError):
        BAHECTR(make_lm(tok, num_lower=3), store, BAHEConfig(families=("bill",)))


def _copy_store(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_or_corrupt_store_is_refused(built, tmp_path):
    _, store, root = built
    vec = store.manifest["files"]["vectors"]["name"]
    # truncated vector file
    d = _copy_store(root, tmp_path / "t")
    p = d / vec
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(StoreCorruptError, match="truncated"):
        BehaviorStore.open(d)
    # one flipped byte: same size, caught by the full check
    d = _copy_store(root, tmp_path / "f")
    p = d / vec
    b = bytearray(p.read_bytes())
    b[-5] ^= 0xFF
    p.write_bytes(bytes(b))
    BehaviorStore.open(d)  # the size check passes
    with pytest.raises(StoreCorruptError, match="SHA-256"):
        BehaviorStore.open(d, verify="full")
    # missing file, broken manifest, no manifest
    d = _copy_store(root, tmp_path / "m")
    (d / vec).unlink()
    with pytest.raises(StoreCorruptError, match="missing"):
        BehaviorStore.open(d)
    d = _copy_store(root, tmp_path / "j")
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(StoreCorruptError, match="not valid JSON"):
        BehaviorStore.open(d)
    (d / "manifest.json").unlink()
    with pytest.raises(StoreError, match=r"no manifest\.json"):
        BehaviorStore.open(d)
    d = _copy_store(root, tmp_path / "v")
    man = json.loads((d / "manifest.json").read_text())
    man["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(StoreError, match="format_version"):
        BehaviorStore.open(d)


def test_crash_during_refresh_keeps_previous_version(tmp_path, lm, monkeypatch):
    import bahe.store as st

    build_store(["a b", "c d"], lm, tmp_path / "s")
    before = sorted(p.name for p in (tmp_path / "s").rglob("*") if p.is_file())

    def boom(*a, **k):
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(st, "_save_npy", boom)
    with pytest.raises(RuntimeError, match="killed"):
        build_store(["a b", "e f"], lm, tmp_path / "s", refresh=True)
    s = BehaviorStore.open(tmp_path / "s", verify="full")
    assert s.version == 1 and len(s) == 2
    after = {p.name for p in (tmp_path / "s").rglob("*") if p.is_file()}
    # the new archive part may be left behind, but it is not named by the manifest
    assert set(before) <= after


def test_catalog_and_texts_inputs_agree(tmp_path, lm):
    cat = BehaviorCatalog()
    cat.add_many(["p q", "r s"])
    a = build_store(cat, lm, tmp_path / "a", dtype="float32")
    b = build_store(["r s", "p q", "p q"], lm, tmp_path / "b", dtype="float32")
    assert np.array_equal(a.keys, b.keys)
    assert np.array_equal(np.asarray(a.vectors), np.asarray(b.vectors))
