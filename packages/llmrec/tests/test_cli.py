import json
import os
import subprocess
import sys

import pytest
from llmrec.__main__ import main


def test_prepare_train_eval_roundtrip(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert (
        main(
            [
                "prepare",
                "--source",
                "synthetic",
                "--users",
                "150",
                "--kcore",
                "3",
                "--out",
                str(data),
            ]
        )
        == 0
    )
    assert (data / "items.parquet").exists() and (data / "meta.json").exists()
    rc = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(run),
            "--max-steps",
            "3",
            "--batch-size",
            "8",
            "--zero-shot",
            "home",
            "--eval-every",
            "2",
        ]
    )
    assert rc == 0
    assert (run / "model.pt").exists() and (run / "checkpoints" / "last.pt").exists()
    meta = json.loads((run / "run.json").read_text())
    assert meta["result"]["steps"] == 3 and meta["zero_shot"] == ["home"]
    negf = tmp_path / "negs.parquet"
    out = tmp_path / "metrics.json"
    args = [
        "eval",
        "--run",
        str(run),
        "--data",
        str(data),
        "--negatives",
        "50",
        "--negatives-file",
        str(negf),
        "--output",
        str(out),
    ]
    assert main(args) == 0
    assert negf.exists()
    first = json.loads(out.read_text())
    assert set(first) == {"sampled", "full"}
    assert {"overall", "diff", "cold", "zero_shot=home"} <= set(first["sampled"])
    assert main(args) == 0  # persisted negatives are reloaded: identical numbers
    assert json.loads(out.read_text()) == first
    text = capsys.readouterr().out
    assert "R@10" in text and "zero_shot=home" in text


def test_cli_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--data", "x", "--out", "y", "--epochs", "0"])
    assert "expected an integer >= 1" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path / "none"), "--data", str(tmp_path / "none")]) == 2
    assert "not a prepared data set" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="needs --domain"):
        main(["prepare", "--source", "amazon2018", "--out", str(tmp_path / "o")])
    (tmp_path / "r.csv").write_text("i1,u1,5.0,1\n")
    (tmp_path / "m.json").write_text('{"asin": "i1", "title": "x"}\n')
    rc = main(
        [
            "prepare",
            "--source",
            "amazon2018",
            "--domain",
            "D",
            str(tmp_path / "r.csv"),
            str(tmp_path / "m.json"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and "no interactions left" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert (
        main(
            [
                "prepare",
                "--source",
                "synthetic",
                "--users",
                "120",
                "--kcore",
                "3",
                "--out",
                str(data),
            ]
        )
        == 0
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "llmrec",
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--max-steps",
        "3",
        "--batch-size",
        "8",
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    meta = json.loads((run / "run.json").read_text())
    assert meta["result"]["steps"] == 3
