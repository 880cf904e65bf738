import json

import pytest
from antm2c.__main__ import main


def test_cli_end_to_end(tmp_path, capsys):
    raw, prep, run1, run2 = (tmp_path / n for n in ("raw", "prep", "r1", "r2"))
    assert (
        main(["generate", "--out", str(raw), "--rows", "6000", "--users", "80", "--items", "120"])
        == 0
    )
    assert main(["prepare", "--input", str(raw), "--out", str(prep), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["rows_written"] == 6000 and rep["malformed"] == 0
    assert (
        main(["train", "--data", str(prep), "--model", "LR", "--epochs", "1", "--out", str(run1)])
        == 0
    )
    assert (
        main(
            [
                "train",
                "--data",
                str(prep),
                "--model",
                "deepfm",
                "--epochs",
                "1",
                "--task",
                "single",
                "--scene",
                "2",
                "--id-mode",
                "hash",
                "--hash-buckets",
                "1000",
                "--out",
                str(run2),
            ]
        )
        == 0
    )
    assert (run1 / "predictions.parquet").is_file() and (run1 / "metrics.json").is_file()
    capsys.readouterr()
    assert main(["eval", "--run", str(run1)]) == 0
    m = json.loads(capsys.readouterr().out)
    doc = json.loads((run1 / "metrics.json").read_text())
    assert m["overall"]["auc"] == pytest.approx(doc["metrics"]["overall"]["auc"])
    assert main(["leaderboard", "--runs", str(tmp_path), "--out", str(tmp_path / "lb.md")]) == 0
    out = capsys.readouterr().out
    assert "| multi | lr |" in out and "| single_s2 | deepfm |" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["prepare", "--input", "/nonexistent/x", "--out", "o"], "no such file or directory"),
        (
            ["prepare", "--input", ".", "--out", "o", "--cutoffs", "2023-08-03"],
            "two comma-separated dates",
        ),
        (
            ["prepare", "--input", ".", "--out", "o", "--cutoffs", "2023-08-05,2023-08-03"],
            "cutoffs must be increasing",
        ),
        (["train", "--data", ".", "--model", "gpt", "--out", "o"], "invalid choice"),
        (
            ["train", "--data", "DATA", "--model", "lr", "--out", "o"],
            "not a prepared AntM2C data set",
        ),
        (["generate", "--out", "o", "--rows", "0"], "expected an integer >= 1"),
        (["eval", "--run", "DATA"], "no predictions.parquet"),
        (["leaderboard", "--runs", "DATA"], "no run directories"),
    ],
)
def test_cli_bad_input_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DATA").mkdir()
    with pytest.raises(SystemExit) as ei:
        raise SystemExit(main(argv))
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_single_task_needs_scene(tmp_path, prepared, capsys):
    root, _ = prepared
    assert (
        main(
            [
                "train",
                "--data",
                str(root),
                "--model",
                "lr",
                "--task",
                "single",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "--task single needs --scene" in capsys.readouterr().err


def test_output_path_that_is_a_file_exits_2(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["generate", "--out", str(afile), "--rows", "100"]) == 2
    err = capsys.readouterr().err
    assert "antm2c generate: error:" in err and "afile" in err


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--rows", "8000", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "Leaderboard" in out and "| multi | deepfm |" in out
    assert (tmp_path / "leaderboard.md").is_file() and (tmp_path / "leaderboard.json").is_file()
