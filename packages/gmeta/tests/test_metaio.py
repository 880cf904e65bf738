"""Meta-IO: build -> read round trip, equality with the naive loader, per-rank assignment,
prefetch, resume, and the errors a bad log or a corrupt task file gets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from gmeta.metaio import (
    FieldSpec,
    MetaIOError,
    MetaIOLoader,
    NaiveTaskLoader,
    TaskSpec,
    build_tasks,
    hash_column,
    read_header,
)
from gmeta.tasks import TaskBatch, split_counts


def _same(a: TaskBatch, b: TaskBatch, *, ids: bool = True) -> None:
    for f in dataclasses.fields(TaskBatch):
        if f.name == "task_id" and not ids:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert torch.equal(x, y), f.name


@pytest.fixture(scope="module")
def built(synth, tmp_path_factory):
    data, spec = synth
    path = tmp_path_factory.mktemp("metaio") / "tasks.parquet"
    rep = build_tasks(data.log, path, spec, row_group_tasks=32)
    return data, spec, path, rep


def test_round_trip_against_independent_grouping(built):
    data, spec, path, rep = built
    h = read_header(path)
    assert h["k"] == spec.k and h["num_rows"] == spec.num_rows and h["n_tasks"] == rep.n_tasks
    batch = TaskBatch.concat(list(MetaIOLoader(path, 50, prefetch=0)))
    assert batch.num_tasks == rep.n_tasks
    keys = pq.read_table(path, columns=["key_user_id"]).column(0).to_numpy()
    df = data.log.to_pandas()
    df["row"] = np.arange(len(df))
    offs = spec.offsets
    for t in [0, 5, 17, rep.n_tasks - 1]:
        g = df[df.user_id == keys[t]].sort_values(["ts", "row"])
        n = len(g)
        ns = min(spec.k, n - spec.min_query)
        nq = min(spec.q, n - ns)
        assert int(batch.s_mask[t].sum()) == ns and int(batch.q_mask[t].sum()) == nq
        ids = np.stack(
            [g[f.column].to_numpy() + o for f, o in zip(spec.fields, offs, strict=True)], 1
        )
        assert np.array_equal(batch.s_sparse[t, :ns].numpy(), ids[:ns])
        assert np.array_equal(batch.q_sparse[t, :nq].numpy(), ids[ns : ns + nq])
        assert np.array_equal(batch.q_label[t, :nq].numpy(), g.label.to_numpy()[ns : ns + nq])
        dense = g[list(spec.dense_columns)].to_numpy(np.float32)
        assert np.array_equal(batch.s_dense[t, :ns].numpy(), dense[:ns])
        # padding repeats the set's first row
        assert torch.equal(batch.s_sparse[t, ns:], batch.s_sparse[t, :1].expand(spec.k - ns, -1))
    # every user with enough rows became exactly one task
    counts = df.groupby("user_id").size()
    assert rep.n_tasks == int((counts >= spec.min_support + spec.min_query).sum())
    assert sorted(keys.tolist()) == sorted(counts[counts >= spec.min_support + 1].index.tolist())


def test_equals_naive_pandas_loader(built):
    data, spec, path, _ = built
    keys = pq.read_table(path, columns=["key_user_id"]).column(0).to_pylist()
    naive = list(NaiveTaskLoader(data.log, spec, 40, task_order=[(k,) for k in keys]))
    ours = list(MetaIOLoader(path, 40, prefetch=2))
    assert len(naive) == len(ours)
    for a, b in zip(ours, naive, strict=True):
        _same(a, b)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_per_rank_shares_partition_every_batch(built, world):
    _, _, path, rep = built
    b = 7
    per_rank = [list(MetaIOLoader(path, b, rank=r, world=world, prefetch=1)) for r in range(world)]
    assert len({len(x) for x in per_rank}) == 1  # same number of steps on every rank
    whole = list(MetaIOLoader(path, b, prefetch=0))
    assert len(whole) == len(per_rank[0]) == -(-rep.n_tasks // b)
    for i, full in enumerate(whole):
        parts = [per_rank[r][i] for r in range(world)]
        assert [len(p) for p in parts] == [e - s for s, e in split_counts(len(full), world)]
        _same(TaskBatch.concat(parts), full)


def test_resume_start_batch_epochs_and_drop_last(built):
    _, _, path, rep = built
    all_b = list(MetaIOLoader(path, 16, epochs=2, prefetch=0))
    per_epoch = -(-rep.n_tasks // 16)
    assert len(all_b) == 2 * per_epoch
    _same(all_b[per_epoch], all_b[0])
    tail = list(MetaIOLoader(path, 16, epochs=2, start_batch=3, prefetch=2))
    assert len(tail) == len(all_b) - 3
    for a, b in zip(tail, all_b[3:], strict=True):
        _same(a, b)
    dl = list(MetaIOLoader(path, 16, drop_last=True, prefetch=0))
    assert len(dl) == rep.n_tasks // 16 and all(len(x) == 16 for x in dl)


def test_prefetch_stops_cleanly_when_abandoned(built):
    import threading

    _, _, path, _ = built
    before = threading.active_count()
    it = iter(MetaIOLoader(path, 4, epochs=None, prefetch=3))
    next(it)
    it.close()
    assert threading.active_count() == before


def _corrupt_middle(path: Path, out: Path) -> None:
    raw = bytearray(path.read_bytes())
    for off in range(len(raw) // 3, len(raw) // 3 + 64):
        raw[off] ^= 0xFF
    out.write_bytes(bytes(raw))


def test_corrupt_files_get_clear_errors(built, tmp_path):
    _, _, path, _ = built
    with pytest.raises(MetaIOError, match="no such task file"):
        MetaIOLoader(tmp_path / "missing.parquet", 4)
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MetaIOError, match="not a readable parquet"):
        MetaIOLoader(trunc, 4)
    flipped = tmp_path / "flipped.parquet"
    _corrupt_middle(path, flipped)
    with pytest.raises(MetaIOError, match="corrupt"):
        for _ in MetaIOLoader(flipped, 4, prefetch=2):
            pass
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), plain)
    with pytest.raises(MetaIOError, match="gmeta header"):
        read_header(plain)
    t = pq.read_table(path)
    meta = json.loads(t.schema.metadata[b"gmeta"])
    newer = tmp_path / "newer.parquet"
    pq.write_table(
        t.replace_schema_metadata({b"gmeta": json.dumps({**meta, "version": 99})}), newer
    )
    with pytest.raises(MetaIOError, match="v99"):
        read_header(newer)
    # ids beyond the table (a writer bug or a corrupt value that kept the page checksum)
    bad_rows = tmp_path / "bad_rows.parquet"
    pq.write_table(
        t.replace_schema_metadata({b"gmeta": json.dumps({**meta, "num_rows": 5})}), bad_rows
    )
    with pytest.raises(MetaIOError, match="outside the table"):
        next(iter(MetaIOLoader(bad_rows, 4, prefetch=0)))


def test_build_errors(synth, tmp_path):
    data, spec = synth
    out = tmp_path / "t.parquet"
    with pytest.raises(MetaIOError, match="lacks columns"):
        build_tasks(data.log.drop_columns(["ctx"]), out, spec)
    small = dataclasses.replace(spec, fields=(FieldSpec("item_id", 10), *spec.fields[1:]))
    with pytest.raises(MetaIOError, match="outside"):
        build_tasks(data.log, out, small)
    bad_label = data.log.set_column(
        data.log.column_names.index("label"),
        "label",
        pa.array(np.full(data.log.num_rows, 2, np.int8)),
    )
    with pytest.raises(MetaIOError, match="0/1"):
        build_tasks(bad_label, out, spec)
    with pytest.raises(MetaIOError, match="no task"):
        build_tasks(data.log, out, dataclasses.replace(spec, k=500, min_support=500, q=500))
    with pytest.raises(MetaIOError, match="no such log"):
        build_tasks(tmp_path / "nope.parquet", out, spec)
    assert not out.exists()  # nothing half-written
    with pytest.raises(ValueError, match="split"):
        TaskSpec(fields=spec.fields, dense_columns=spec.dense_columns, split="future")
    with pytest.raises(ValueError, match="min_support"):
        TaskSpec(fields=spec.fields, dense_columns=spec.dense_columns, k=3, min_support=4)


def test_user_scene_tasks_and_random_split(synth, tmp_path):
    data, spec = synth
    us = dataclasses.replace(spec, task_keys=("user_id", "scene"), min_support=2)
    rep = build_tasks(data.log, tmp_path / "us.parquet", us)
    keys = pq.read_table(tmp_path / "us.parquet", columns=["key_user_id", "key_scene"]).to_pandas()
    assert len(keys.drop_duplicates()) == rep.n_tasks > read_header(tmp_path / "us.parquet")["k"]
    rnd = dataclasses.replace(spec, split="random", seed=3)
    a = build_tasks(data.log, tmp_path / "r1.parquet", rnd)
    b = build_tasks(data.log, tmp_path / "r2.parquet", rnd)
    assert a.n_tasks == b.n_tasks
    _same(
        next(iter(MetaIOLoader(tmp_path / "r1.parquet", 8))),
        next(iter(MetaIOLoader(tmp_path / "r2.parquet", 8))),
    )


def test_hash_column_is_stable_and_in_range():
    ints = hash_column(pa.array([1, 2, 3, 1], pa.int64()), 7)
    assert ints[0] == ints[3] and ints.min() >= 0 and ints.max() < 7
    strs = hash_column(pa.chunked_array([["a", "b"], ["a", None]]), 1000)
    assert strs[0] == strs[2] and len(set(strs.tolist())) >= 2
    assert np.array_equal(strs, hash_column(pa.array(["a", "b", "a", None]), 1000))


def test_naive_default_order_equals_unshuffled_metaio(synth, tmp_path):
    data, spec = synth
    build_tasks(data.log, tmp_path / "u.parquet", spec, shuffle=False)
    ours = MetaIOLoader(tmp_path / "u.parquet", 50, prefetch=0)
    for a, b in zip(ours, NaiveTaskLoader(data.log, spec, 50), strict=True):
        _same(a, b)
