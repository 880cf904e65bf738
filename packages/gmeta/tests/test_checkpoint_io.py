"""Checkpoint safety (in-process), AntM2C-format reading (hand-written files), AUC, synthetic data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from gmeta.antm2c_io import antm2c_spec, read_antm2c
from gmeta.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from gmeta.maml import MAMLConfig
from gmeta.metaio import MetaIOError, MetaIOLoader, build_tasks, read_header
from gmeta.metrics import auc
from gmeta.synthetic import SyntheticConfig, generate_log
from gmeta.train import TrainConfig, build_trainer


def _trainer(task_file, **kw):
    kw = {"embedding_dim": 4, **kw}
    cfg = TrainConfig(
        tasks=task_file,
        out="unused",
        tasks_per_batch=6,
        bottom=(8,),
        top=(8,),
        maml=MAMLConfig(outer_optimizer="adagrad"),
        **kw,
    )
    return build_trainer(cfg, read_header(task_file))


def test_checkpoint_corruption_and_incomplete_saves(task_file, tmp_path):
    tr = _trainer(task_file)
    it = iter(MetaIOLoader(task_file, 6, prefetch=0, epochs=None))
    tr.step(next(it))
    first = save_checkpoint(tmp_path, tr)
    tr.step(next(it))
    second = save_checkpoint(tmp_path, tr)
    assert latest_checkpoint(tmp_path) == second
    # a crash mid-save leaves a directory without COMPLETE.json: it is not a checkpoint
    (tmp_path / "step-00000009").mkdir()
    (tmp_path / "step-00000009" / "shard-00000-of-00001.pt").write_bytes(b"partial")
    (tmp_path / "latest").write_text("step-00000009\n")
    assert latest_checkpoint(tmp_path) == second
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "step-00000009", _trainer(task_file))
    # one flipped byte in a shard: refused, the trainer untouched
    shard = second / "shard-00000-of-00001.pt"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 1
    shard.write_bytes(bytes(raw))
    fresh = _trainer(task_file)
    w0 = fresh.table.weight.clone()
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(second, fresh)
    assert torch.equal(w0, fresh.table.weight) and fresh.step_count == 0
    load_checkpoint(first, fresh)
    assert fresh.step_count == 1
    # a checkpoint of another table shape does not load
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(first, _trainer(task_file, embedding_dim=8))
    assert len(list(tmp_path.glob("step-*"))) == 3  # keep=2 complete + the incomplete one


def _raw_rows(n: int, bad_time: bool = False) -> list[list[str]]:
    rows = []
    for i in range(n):
        t = f"2023-08-0{1 + i % 5} 1{i % 10}:00:00" if not (bad_time and i == 3) else "yesterday"
        row = [f"u{i % 4}", f"item{i % 7}", t, str(i % 2), "a,b", "", "q", "x", "title", str(i % 5)]
        row += [str(i % 3) if k not in (14, 19, 20, 21) else f"{0.5 * i:.2f}" for k in range(27)]
        rows.append(row)
    return rows


HEADER = [
    "user_id",
    "item_id",
    "log_time",
    "label",
    "bill_entity_seq",
    "service_entity_seq",
    "query_entity_seq",
    "item_entity_names",
    "item_title",
    "scene",
] + [f"deep_features_{k}" for k in range(27)]


def _write_raw(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(HEADER)
        w.writerows(rows)


def test_read_raw_antm2c_parts(tmp_path):
    _write_raw(tmp_path / "antm2c_10m_part0", _raw_rows(40))
    t = read_antm2c(tmp_path)
    assert t.num_rows == 40 and t["ts"].type == pa.int64()
    assert set(t.column_names) >= {"user_id", "item_id", "scene", "ts", "label", "cat_0", "num_14"}
    spec = antm2c_spec(t, k=3, q=2, task="user_scene", min_support=1)
    rep = build_tasks(t, tmp_path / "t.parquet", spec)
    assert rep.n_tasks > 0 and read_header(tmp_path / "t.parquet")["num_dense"] == 4
    _write_raw(tmp_path / "antm2c_10m_part1", _raw_rows(10, bad_time=True))
    with pytest.raises(MetaIOError, match="log_time"):
        read_antm2c(tmp_path)
    (tmp_path / "antm2c_10m_part1").write_text("user_id,item_id\nu,i\n")
    with pytest.raises(MetaIOError, match="header lacks"):
        read_antm2c(tmp_path)
    with pytest.raises(MetaIOError, match="neither"):
        read_antm2c(_empty(tmp_path))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_read_prepared_antm2c(tmp_path):
    part = tmp_path / "split=train" / "scene=1"
    part.mkdir(parents=True)
    n = 12
    cols = {
        "row": pa.array(np.arange(n)),
        "user_id": pa.array(np.arange(n) % 3),
        "item_id": pa.array(np.arange(n) * 1_000_003),
        "log_time": pa.array(np.arange(n) * 60_000, pa.timestamp("ms")),
        "label": pa.array(np.arange(n) % 2, pa.int8()),
        "scene": pa.array(np.ones(n), pa.int8()),
    }
    for k in range(27):
        cols[f"deep_features_{k}"] = (
            pa.array(np.arange(n) * 0.5, pa.float32())
            if k in (14, 19, 20, 21)
            else pa.array(np.arange(n) % 4)
        )
    pq.write_table(pa.table(cols), part / "part-00000.parquet")
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {}}))
    t = read_antm2c(tmp_path)
    assert t.num_rows == n and t["ts"].to_pylist()[2] == 120
    rep = build_tasks(t, tmp_path / "t.parquet", antm2c_spec(t, k=2, q=2))
    assert rep.n_tasks == 3


def test_auc_against_pairwise_count():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc(y, s) == pytest.approx(pairs, abs=1e-12)
    with pytest.raises(ValueError, match="both"):
        auc(np.ones(5), np.arange(5))


def test_synthetic_is_deterministic_and_validated():
    a, b = generate_log(SyntheticConfig(n_users=30)), generate_log(SyntheticConfig(n_users=30))
    assert a.log.equals(b.log) and np.array_equal(a.cold_users, b.cold_users)
    assert not np.isin(a.cold_users, a.warm_users).any()
    with pytest.raises(ValueError, match="liked"):
        SyntheticConfig(categories=2, liked=2)
    with pytest.raises(ValueError, match="cold_fraction"):
        SyntheticConfig(cold_fraction=1.0)
