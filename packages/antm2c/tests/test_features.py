import numpy as np
import pyarrow as pa
import pytest
from antm2c import FeatureEncoder, FeatureSpec, ParquetStream, split_files
from antm2c.features import _pad


def test_pad():
    vals = np.array([1, 2, 3, 4, 5, 6])
    lens = np.array([2, 0, 4])
    out = _pad(vals, lens, 3)
    np.testing.assert_array_equal(out, [[1, 2, 0], [0, 0, 0], [3, 4, 5]])


def test_vocab_from_train_only_and_cold_items_are_oov(prepared, raw):
    root, _ = prepared
    spec = FeatureSpec.preset("text")
    enc = FeatureEncoder.fit(split_files(root, "train"), spec)
    test = pa.concat_tables(pa.parquet.read_table(f) for f in split_files(root, "test"))
    arr = enc.transform(test)
    item_col = spec.sparse.index("item_id")
    cold = arr["cold_item"]
    assert cold.any() and (~cold).any()
    assert (arr["sparse"][cold, item_col] == 1).all()  # OOV
    assert (arr["sparse"][~cold, item_col] >= 2).all()
    # the cold items' title tokens are known words (text carries category to cold items)
    title = spec.sequences.index("item_title")
    toks = arr["seq"][cold, title]
    assert (toks[toks > 0] >= 2).mean() > 0.95


def test_hash_mode_and_dense(prepared):
    root, _ = prepared
    spec = FeatureSpec.preset("tabular", id_mode="hash", hash_buckets=101)
    enc = FeatureEncoder.fit(split_files(root, "train"), spec)
    assert enc.sparse_cardinalities == [101] * len(spec.sparse)
    t = pa.parquet.read_table(split_files(root, "val")[0])
    arr = enc.transform(t)
    assert arr["sparse"].min() >= 2 and arr["sparse"].max() < 101
    assert np.isfinite(arr["dense"]).all()


def test_stream_visits_every_row_once(prepared):
    root, _ = prepared
    files = split_files(root, "train")
    enc = FeatureEncoder.fit(files, FeatureSpec())
    stream = ParquetStream(
        files, enc, batch_size=500, shuffle=True, buffer_rows=3_000, read_rows=1_000, seed=1
    )
    rows1 = np.concatenate([b["row"].numpy() for b in stream])
    rows2 = np.concatenate([b["row"].numpy() for b in stream])
    n = sum(pa.parquet.ParquetFile(f).metadata.num_rows for f in files)
    assert len(rows1) == n and len(np.unique(rows1)) == n
    assert not np.array_equal(rows1, rows2)  # reshuffled per epoch
    np.testing.assert_array_equal(np.sort(rows1), np.sort(rows2))


def test_image_embeddings_join(prepared, raw):
    root, _ = prepared
    spec = FeatureSpec(image=str(raw.image_path))
    enc = FeatureEncoder.fit(split_files(root, "train"), spec)
    assert enc.image_dim == 4
    t = pa.parquet.read_table(split_files(root, "train")[0])
    arr = enc.transform(t)
    assert (np.abs(arr["image"]).sum(1) > 0).all()


def test_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown columns"):
        FeatureSpec(sparse=("nope",))
    with pytest.raises(ValueError, match="unknown text columns"):
        FeatureSpec(sequences=("user_id",))
    with pytest.raises(ValueError, match="id_mode"):
        FeatureSpec(id_mode="magic")
    with pytest.raises(ValueError, match="unknown feature preset"):
        FeatureSpec.preset("everything")
    (tmp_path / "x").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="image embedding file"):
        FeatureEncoder.fit([tmp_path / "x"], FeatureSpec(image=str(tmp_path / "none.parquet")))
    with pytest.raises(FileNotFoundError, match="training files do not exist"):
        FeatureEncoder.fit([tmp_path / "y"], FeatureSpec())
