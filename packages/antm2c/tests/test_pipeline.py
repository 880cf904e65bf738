import csv
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from antm2c import (
    RAW_COLUMNS,
    MalformedRowError,
    PrepareConfig,
    SchemaError,
    SynthConfig,
    audit_splits,
    generate,
    key64,
    prepare,
    read_manifest,
    split_files,
    validate_processed,
)
from antm2c.pipeline import SPLITS


def _read_all(root):
    files = [f for s in SPLITS for f in split_files(root, s)]
    return pa.concat_tables([pq.read_table(f) for f in files])


def test_round_trip_counts_and_schema(raw, prepared):
    root, rep = prepared
    df = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in raw.parts])
    t = _read_all(root)
    assert rep.malformed == 0
    assert t.num_rows == rep.rows_written == len(df)
    assert int(pa.compute.sum(t["label"]).as_py()) == df["label"].astype(int).sum()
    assert sorted(t["row"].to_numpy()) == list(range(len(df)))
    validate_processed(t)
    # ids become stable blake2b keys of the raw strings
    order = np.argsort(t["row"].to_numpy())
    np.testing.assert_array_equal(
        t["user_id"].to_numpy()[order], key64(pa.array(df["user_id"].to_numpy()))
    )
    # no temporary files are left behind
    assert not list(root.rglob("*.tmp"))
    man = read_manifest(root)
    assert sum(man["files"].values()) == len(df)


def test_time_split_is_leak_free(prepared):
    root, _ = prepared
    rep = audit_splits(root)
    assert rep["ok"] and rep["official_split"] is False
    c1, c2 = (pd.Timestamp(c) for c in read_manifest(root)["cutoffs"])
    for split, (lo, hi) in (("train", (None, c1)), ("val", (c1, c2)), ("test", (c2, None))):
        for f in split_files(root, split):
            t = pq.read_table(f, columns=["log_time", "scene"]).to_pandas()
            scene = int(f.parent.name.split("=")[1])
            assert (t["scene"] == scene).all()
            if lo is not None:
                assert (t["log_time"] >= lo).all()
            if hi is not None:
                assert (t["log_time"] < hi).all()


def test_audit_catches_a_leak(prepared, tmp_path):
    import shutil

    root, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    f = split_files(copy, "train")[0]
    t = pq.read_table(f)
    late = pa.array(np.full(t.num_rows, np.datetime64("2023-08-06T00:00:00", "s")))
    pq.write_table(t.set_column(t.schema.get_field_index("log_time"), "log_time", late), f)
    from antm2c import LeakageError

    with pytest.raises(LeakageError, match="outside the split's window"):
        audit_splits(copy)


def _corrupt(src, dst):
    """Copy a CSV, breaking known lines; return {line number: reason fragment}."""
    with open(src, newline="") as f:
        rows = list(csv.reader(f))
    col = {c: i for i, c in enumerate(RAW_COLUMNS)}
    bad = {}
    rows[4 - 1][col["log_time"]] = "2023-13-45 99:00:00"
    bad[4] = "log_time"
    rows[8 - 1][col["label"]] = "2"
    bad[8] = "label"
    rows[12 - 1] = rows[12 - 1][:-1]
    bad[12] = "wrong number of columns"
    rows[20 - 1][col["deep_features_19"]] = "abc"
    bad[20] = "deep_features_19"
    rows[30 - 1][col["user_id"]] = ""
    bad[30] = "empty user_id"
    rows[31 - 1][col["scene"]] = "9"
    bad[31] = "scene"
    with open(dst, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return bad, len(rows) - 1


def test_malformed_rows_reported_with_lines_and_quarantined(tmp_path):
    gt = generate(
        tmp_path / "raw",
        SynthConfig(n_rows=2_000, n_users=40, n_items=50, seed=1),
        progress_bar=False,
    )
    src = tmp_path / "in" / "antm2c_10m_part0"
    src.parent.mkdir()
    bad, n = _corrupt(gt.parts[0], src)
    rep = prepare(
        src.parent, tmp_path / "out", PrepareConfig(block_size=64 << 10), progress_bar=False
    )
    assert rep.malformed == len(bad)
    assert rep.rows_read == n
    assert rep.rows_written == n - len(bad)
    lines = {ex["line"]: ex["reason"] for ex in rep.malformed_examples}
    assert set(lines) == set(bad)
    for line, frag in bad.items():
        assert frag in lines[line]
    q = pd.read_csv(tmp_path / "out" / "quarantine" / "malformed.csv")
    assert sorted(q["line"]) == sorted(bad)
    # the surviving rows keep their original data-row numbers (line - 2)
    rows = set(_read_all(tmp_path / "out")["row"].to_pylist())
    assert rows == set(range(n)) - {line - 2 for line in bad}
    # nothing was coerced: the bad-time row is not in any split
    assert 4 - 2 not in rows


def test_malformed_error_mode_and_fraction_guard(tmp_path):
    gt = generate(
        tmp_path / "raw",
        SynthConfig(n_rows=500, n_users=20, n_items=30, seed=2),
        progress_bar=False,
    )
    src = tmp_path / "antm2c_x_part0"
    _corrupt(gt.parts[0], src)
    with pytest.raises(MalformedRowError, match=r"antm2c_x_part0:4: malformed row \(log_time"):
        prepare(src, tmp_path / "o1", PrepareConfig(on_malformed="error"), progress_bar=False)
    assert not (tmp_path / "o1" / "manifest.json").exists()
    assert not list((tmp_path / "o1").rglob("*.parquet"))
    with pytest.raises(MalformedRowError, match="6 of 500 rows are malformed"):
        prepare(
            src, tmp_path / "o2", PrepareConfig(max_malformed_fraction=0.001), progress_bar=False
        )
    assert not list((tmp_path / "o2").rglob("*.parquet"))


def test_bad_inputs(tmp_path, raw):
    bad = tmp_path / "antm2c_bad_part0"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(SchemaError, match="header does not match"):
        prepare(bad, tmp_path / "o", progress_bar=False)
    empty = tmp_path / "empty_part0"
    empty.write_text("")
    with pytest.raises(SchemaError, match="file is empty"):
        prepare(empty, tmp_path / "o", progress_bar=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        prepare(tmp_path / "missing", tmp_path / "o", progress_bar=False)
    (tmp_path / "nodata").mkdir()
    with pytest.raises(FileNotFoundError, match="no AntM2C parts"):
        prepare(tmp_path / "nodata", tmp_path / "o", progress_bar=False)
    with pytest.raises(ValueError, match="cutoffs must be increasing"):
        PrepareConfig(cutoffs=("2023-08-05", "2023-08-03"))
    with pytest.raises(ValueError, match="on_malformed"):
        PrepareConfig(on_malformed="coerce")
    out = tmp_path / "twice"
    prepare(raw.parts[0], out, PrepareConfig(), progress_bar=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare(raw.parts[0], out, PrepareConfig(), progress_bar=False)
    rep = prepare(raw.parts[0], out, PrepareConfig(overwrite=True), progress_bar=False)
    assert rep.rows_written > 0


def test_second_time_format_accepted(tmp_path, raw):
    with open(raw.parts[0], newline="") as f:
        rows = list(csv.reader(f))[:50]
    rows[1][2] = "2023/7/20 9:05"
    src = tmp_path / "antm2c_t_part0"
    with open(src, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    rep = prepare(src, tmp_path / "o", progress_bar=False)
    assert rep.malformed == 0 and rep.rows_written == 49
    t = _read_all(tmp_path / "o").to_pandas()
    assert pd.Timestamp("2023-07-20 09:05:00") in set(t["log_time"])


def test_key64_stable_across_processes():
    vals = ["alpha", "béta", "", "支付宝"]
    here = key64(pa.array(vals)).tolist()
    code = (
        "import pyarrow as pa, json; from antm2c import key64; "
        f"print(json.dumps(key64(pa.array({vals!r})).tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},  # a different str-hash salt
    )
    assert json.loads(out.stdout) == here
    assert here[2] == 0 and len(set(here)) == 4
