"""gmeta on AntM2C-format logs written by antm2c: synthetic AntM2C CSV parts (antm2c.generate)
and the prepared parquet (antm2c.prepare) become gmeta tasks (per user, and per user x scene),
and 2-rank hybrid-parallel MAML on them equals the single-process reference."""

from __future__ import annotations

import dataclasses

import antm2c
import pandas as pd
import pyarrow.parquet as pq
import pytest
from gmeta import MAMLConfig, TrainConfig, antm2c_spec, build_tasks, read_antm2c, read_header
from gmeta.equivalence import distributed_run, max_abs_diff, reference_run

from shared import spawn


@pytest.fixture(scope="module")
def antm2c_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("antm2c")
    antm2c.generate(root / "raw", antm2c.SynthConfig(n_rows=20_000, seed=0), progress_bar=False)
    antm2c.prepare(root / "raw", root / "prepared")
    return root


def test_tasks_from_raw_and_prepared_agree(antm2c_data):
    raw = read_antm2c(antm2c_data / "raw")
    prepared = read_antm2c(antm2c_data / "prepared")
    assert raw.num_rows == prepared.num_rows == 20_000
    k, q = 5, 5
    for task in ("user", "user_scene"):
        a = build_tasks(
            raw, antm2c_data / f"raw_{task}.parquet", antm2c_spec(raw, k=k, q=q, task=task)
        )
        b = build_tasks(
            prepared,
            antm2c_data / f"prep_{task}.parquet",
            antm2c_spec(prepared, k=k, q=q, task=task),
        )
        # independent count from the CSV with pandas: tasks with >= k + 1 interactions
        df = pd.concat(
            pd.read_csv(p, usecols=["user_id", "scene"])
            for p in sorted((antm2c_data / "raw").glob("antm2c_*part*"))
        )
        keys = ["user_id"] if task == "user" else ["user_id", "scene"]
        sizes = df.groupby(keys).size()
        assert a.n_tasks == b.n_tasks == int((sizes >= k + 1).sum()) > 100
        # the same tasks carry the same labels in the same (time) order
        la = pq.read_table(a.path, columns=["s_label", "q_label"]).to_pydict()
        lb = pq.read_table(b.path, columns=["s_label", "q_label"]).to_pydict()
        assert sorted(map(str, zip(la["s_label"], la["q_label"], strict=True))) == sorted(
            map(str, zip(lb["s_label"], lb["q_label"], strict=True))
        )


def test_hybrid_parallel_maml_on_antm2c_equals_reference(antm2c_data):
    raw = read_antm2c(antm2c_data / "raw")
    path = antm2c_data / "scene_tasks.parquet"
    build_tasks(raw, path, antm2c_spec(raw, k=4, q=4, task="user_scene", item_buckets=512))
    assert read_header(path)["num_dense"] == 4
    cfg = TrainConfig(
        tasks=str(path),
        out="unused",
        tasks_per_batch=9,
        embedding_dim=4,
        bottom=(8,),
        top=(8,),
        dtype="float64",
        maml=MAMLConfig(adapt="dense+emb", outer_lr=0.05, inner_steps=2),
    )
    ref = reference_run(cfg, 3)
    res = spawn(distributed_run, 2, args=(cfg, 3), timeout_s=600)
    assert max_abs_diff(res[0], ref)["max"] < 1e-10
    assert all(st["phases"]["compute"]["ops"] == [] for st in res[0]["stats"])
    fo = dataclasses.replace(cfg, maml=dataclasses.replace(cfg.maml, first_order=True))
    assert (
        max_abs_diff(
            spawn(distributed_run, 2, args=(fo, 3), timeout_s=600)[0], reference_run(fo, 3)
        )["max"]
        < 1e-10
    )
