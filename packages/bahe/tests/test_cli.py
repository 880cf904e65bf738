import json
import subprocess
import sys

import pytest
from bahe.__main__ import main
from bahe.data import write_simple


def test_cli_build_train_eval_refresh(tmp_path, synth, capsys):
    train_d, test_d, _ = synth
    data = write_simple(train_d, tmp_path / "train.parquet")
    common = [
        "--layers",
        "3",
        "--hidden",
        "32",
        "--num-lower",
        "1",
        "--pretrain-steps",
        "0",
        "--max-behaviors",
        "5",
    ]
    store = tmp_path / "store"
    assert main(["build-store", "--data", str(data), "--out", str(store), *common]) == 0
    man = json.loads((store / "manifest.json").read_text())
    assert man["version"] == 1 and man["identity"]["num_lower"] == 1
    assert (store / "lm" / "bahe_model.json").exists()
    # building again without --refresh is refused, with refresh nothing new is encoded
    assert main(["build-store", "--data", str(data), "--out", str(store), *common]) == 2
    assert "refresh" in capsys.readouterr().err
    both = write_simple(test_d, tmp_path / "test.parquet")
    assert (
        main(["build-store", "--data", str(both), "--out", str(store), "--refresh", *common]) == 0
    )
    assert json.loads((store / "manifest.json").read_text())["version"] == 2
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--store",
                str(store),
                "--out",
                str(run),
                "--steps",
                "3",
                "--batch-size",
                "8",
                *common,
            ]
        )
        == 0
    )
    assert (run / "model.pt").exists()
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data", str(both)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= out["auc"] <= 1 and out["rows"] == len(test_d)
    # a store built with another split is refused by train
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--store",
                str(store),
                "--out",
                str(run),
                "--steps",
                "1",
                *[c if c != "1" else "2" for c in common],
            ]
        )
        == 2
    )
    assert "different model/split" in capsys.readouterr().err


def test_cli_bad_arguments(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bahe",
            "train",
            "--data",
            "x",
            "--store",
            "y",
            "--out",
            "z",
            "--steps",
            "-3",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "positive integer" in r.stderr
    assert (
        main(
            ["build-store", "--data", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "s")]
        )
        == 2
    )
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
