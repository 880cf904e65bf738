"""Issue 17: inputs a new user hits (bad bytes, huge rows, multi-line fields, gzip, kills)."""

import csv
import gzip
import io
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from antm2c import (
    RAW_COLUMNS,
    MalformedRowError,
    PrepareConfig,
    SynthConfig,
    generate,
    prepare,
    read_manifest,
    split_files,
)
from antm2c.pipeline import SPLITS

COL = {c: i for i, c in enumerate(RAW_COLUMNS)}


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _write(rows, dst):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    dst.write_bytes(buf.getvalue().encode("utf-8"))


def _small(tmp_path, n=1_500, seed=5):
    gt = generate(
        tmp_path / "raw",
        SynthConfig(n_rows=n, n_users=40, n_items=50, seed=seed),
        progress_bar=False,
    )
    return gt, _rows(gt.parts[0])


def _physical_line_of(data: bytes, needle: bytes) -> int:
    return data[: data.index(needle)].count(b"\n") + 1


def _written_rows(root):
    files = [f for s in SPLITS for f in split_files(root, s)]
    return pa.concat_tables([pq.read_table(f) for f in files]).num_rows


def test_invalid_utf8_row_is_quarantined_with_file_and_line(tmp_path):
    _gt, rows = _small(tmp_path)
    rows[40][COL["item_title"]] = "BADBYTES-HERE"
    src = tmp_path / "in" / "antm2c_10m_part0"
    src.parent.mkdir()
    _write(rows, src)
    data = src.read_bytes().replace(b"BADBYTES-HERE", b"bad \xff\xfe title")
    src.write_bytes(data)
    line = _physical_line_of(data, b"bad \xff\xfe")
    rep = prepare(src.parent, tmp_path / "out", PrepareConfig(), progress_bar=False)
    assert rep.malformed == 1 and rep.rows_read == len(rows) - 1
    ex = rep.malformed_examples[0]
    assert ex["file"] == "antm2c_10m_part0" and ex["line"] == line
    assert "UTF-8" in ex["reason"] and "item_title" in ex["reason"]
    assert _written_rows(tmp_path / "out") == len(rows) - 2
    q = pd.read_csv(tmp_path / "out" / "quarantine" / "malformed.csv")
    assert list(q["line"]) == [line]


def test_row_larger_than_block_names_file_line_and_flag(tmp_path):
    _gt, rows = _small(tmp_path)
    rows[700][COL["item_title"]] = "x" * 200_000
    src = tmp_path / "antm2c_big_part0"
    _write(rows, src)
    with pytest.raises(MalformedRowError) as ei:
        prepare(src, tmp_path / "out", PrepareConfig(block_size=64 << 10), progress_bar=False)
    msg = str(ei.value)
    assert "antm2c_big_part0:701" in msg and "--block-size" in msg and "block_size" in msg
    assert not list((tmp_path / "out").rglob("*.parquet"))
    # the flag it names fixes it
    rep = prepare(src, tmp_path / "out", PrepareConfig(block_size=1 << 20), progress_bar=False)
    assert rep.malformed == 0 and rep.rows_written == len(rows) - 1


def test_line_numbers_are_physical_after_multiline_fields(tmp_path):
    _gt, rows = _small(tmp_path)
    for r in (5, 9, 300, 301, 990):  # quoted titles spanning 2-4 physical lines
        rows[r][COL["item_title"]] = "first\nsecond\r\nthird" if r % 2 else "a\nb"
    rows[1000][COL["label"]] = "7"  # a value error after them
    rows[1100] = rows[1100][:-1]  # a wrong column count after them
    rows[1200][COL["item_title"]] = "more\nlines"  # between the two quarantined rows
    rows[1250][COL["scene"]] = "x"
    src = tmp_path / "antm2c_ml_part0"
    _write(rows, src)
    text = src.read_bytes()
    lines = text.split(b"\n")
    # physical line (1-based) where each bad record starts
    want = {}
    for rec, tag in ((1000, "label"), (1100, "wrong number of columns"), (1250, "scene")):
        first = ",".join(rows[rec][:3]).encode()
        want[next(i + 1 for i, ln in enumerate(lines) if ln.startswith(first))] = tag
    rep = prepare(src, tmp_path / "out", PrepareConfig(block_size=16 << 10), progress_bar=False)
    got = {ex["line"]: ex["reason"] for ex in rep.malformed_examples}
    assert set(got) == set(want), (got, want)
    for line, tag in want.items():
        assert tag in got[line]
    # multi-line values survive intact
    t = pa.concat_tables(
        [pq.read_table(f) for s in SPLITS for f in split_files(tmp_path / "out", s)]
    )
    assert t.num_rows == len(rows) - 1 - 3


def test_gzip_parts_are_read_streaming(tmp_path):
    gt = generate(
        tmp_path / "raw",
        SynthConfig(n_rows=3_000, n_users=40, n_items=50, n_parts=2, seed=6),
        progress_bar=False,
    )
    gz = tmp_path / "gz"
    gz.mkdir()
    for p in gt.parts:
        with open(p, "rb") as f, gzip.open(gz / (p.name + ".csv.gz"), "wb") as g:
            g.write(f.read())
    plain = prepare(gt.out_dir, tmp_path / "p1", PrepareConfig(), progress_bar=False)
    zipped = prepare(gz, tmp_path / "p2", PrepareConfig(), progress_bar=False)
    assert zipped.rows_written == plain.rows_written == 3_000
    a = pa.concat_tables(
        [pq.read_table(f) for s in SPLITS for f in split_files(tmp_path / "p1", s)]
    )
    b = pa.concat_tables(
        [pq.read_table(f) for s in SPLITS for f in split_files(tmp_path / "p2", s)]
    )
    assert a.sort_by("row").equals(b.sort_by("row"))
    assert {i["name"] for i in read_manifest(tmp_path / "p2")["inputs"]} == {
        p.name + ".csv.gz" for p in gt.parts
    }


def _files_on_disk(root):
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _expected_files(root):
    man = read_manifest(root)
    extra = {"manifest.json"}
    if (root / "quarantine" / "malformed.csv").exists():
        extra.add("quarantine/malformed.csv")
    return set(man["files"]) | extra


def test_rerun_after_a_killed_run_leaves_exactly_the_manifest_files(tmp_path, raw):
    out = tmp_path / "out"
    prepare(raw.parts[0], out, PrepareConfig(rows_per_file=3_000), progress_bar=False)
    # what a killed rerun leaves: temp files and complete parts not in any manifest
    (out / "manifest.json").unlink()
    d = out / "split=train" / "scene=0"
    (d / ".part-00007.parquet.abc123.tmp").write_bytes(b"half")
    (d / "part-00042.parquet").write_bytes(b"stale")
    (out / "quarantine").mkdir(exist_ok=True)
    (out / "quarantine" / ".malformed.csv.x.tmp").write_text("half")
    prepare(raw.parts[0], out, PrepareConfig(), progress_bar=False)
    assert _files_on_disk(out) == _expected_files(out)
    # --overwrite over a complete data set with stale extras, too
    (d / "part-00043.parquet").write_bytes(b"stale")
    prepare(raw.parts[0], out, PrepareConfig(overwrite=True), progress_bar=False)
    assert _files_on_disk(out) == _expected_files(out)


@pytest.fixture(scope="module")
def kill_input(tmp_path_factory):
    gt = generate(
        tmp_path_factory.mktemp("killraw"),
        SynthConfig(n_rows=60_000, n_users=200, n_items=300, chunk_rows=30_000, seed=8),
        progress_bar=False,
    )
    return gt.out_dir


def _kill_mid_run(src, out, sig):
    cmd = [sys.executable, "-m", "antm2c", "prepare", "--input", str(src), "--out", str(out)]
    cmd += ["--row-group-rows", "512", "--block-size", str(64 << 10), "--json"]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "PROGRESS": "0"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300  # the child imports torch: slow on a loaded machine
    while time.time() < deadline and not list(out.rglob("*.tmp")) and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None and list(out.rglob("*.tmp")), "no temp file seen mid-run"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert not (out / "manifest.json").exists()
    return proc.returncode, err


@pytest.mark.slow  # two subprocesses importing torch: 20 s idle, 100 s on a loaded machine
def test_sigterm_is_as_clean_as_sigint_and_sigkill_is_repaired_by_a_rerun(tmp_path, kill_input):
    out = tmp_path / "out"
    rc, err = _kill_mid_run(kill_input, out, signal.SIGTERM)
    assert not list(out.rglob("*.tmp")), sorted(map(str, out.rglob("*")))
    assert not list(out.rglob("*.parquet"))
    assert rc == 130, (rc, err.decode()[-2000:])
    assert b"Traceback" not in err and b"interrupted by SIGTERM" in err, err.decode()[-2000:]
    _kill_mid_run(kill_input, out, signal.SIGKILL)  # leaves its temp files behind
    prepare(kill_input, out, PrepareConfig(), progress_bar=False)
    assert _files_on_disk(out) == _expected_files(out)


@pytest.mark.slow
def test_sigint_mid_run_leaves_nothing(tmp_path, kill_input):
    out = tmp_path / "out"
    rc, err = _kill_mid_run(kill_input, out, signal.SIGINT)
    assert rc == 130, (rc, err.decode()[-2000:])
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.parquet"))
    assert b"Traceback" not in err and b"interrupted" in err
