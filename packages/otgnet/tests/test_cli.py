import json

import pytest
from otgnet.__main__ import main


def test_prepare_train_eval_roundtrip(tmp_path, capsys):
    data, out = tmp_path / "g", tmp_path / "run"
    assert main(["prepare", "--nodes-per-class", "10", "--n-task", "2", "--out", str(data)]) == 0
    assert (data / "meta.json").is_file()
    rc = main(
        [
            "train",
            "--data",
            str(data),
            "--n-task",
            "2",
            "--n-class",
            "2",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    assert len(res["acc"]) == 2 and res["ap"] >= 0
    capsys.readouterr()
    assert (
        main(["eval", "--checkpoint", str(out / "model.pt"), "--data", str(data), "--threads", "1"])
        == 0
    )
    text = capsys.readouterr().out
    assert "task 1: test accuracy" in text
    # the evaluation of the checkpoint reproduces the last row of the training run
    got = [
        float(line.split()[4].rstrip("%")) for line in text.splitlines() if line.startswith("task ")
    ]
    assert got == pytest.approx([round(a, 1) for a in res["acc"][-1]], abs=0.051)


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["prepare", "--format", "otgnet", "--out", str(tmp_path / "x")]) == 2
    assert "--input is required" in capsys.readouterr().err
    assert (
        main(
            [
                "prepare",
                "--format",
                "otgnet",
                "--input",
                str(tmp_path / "none.csv"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path),
                "--n-task",
                "2",
                "--n-class",
                "2",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "not a prepared graph" in capsys.readouterr().err
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    assert (
        main(["prepare", "--nodes-per-class", "5", "--n-task", "2", "--out", str(tmp_path / "g")])
        == 0
    )
    assert main(["eval", "--checkpoint", str(bad), "--data", str(tmp_path / "g")]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["prepare", "--heterophily", "2", "--out", str(tmp_path / "y")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                "--data",
                str(tmp_path),
                "--system",
                "ewc",
                "--n-task",
                "1",
                "--n-class",
                "1",
                "--out",
                "o",
            ]
        )
    assert e.value.code == 2


def test_prepare_hetero_partner_and_bench_seeds_arguments(tmp_path, capsys):
    from otgnet.data.formats import load_graph

    args = ["prepare", "--nodes-per-class", "20", "--heterophily", "0.8"]
    assert main([*args, "--hetero-partner", "uniform", "--out", str(tmp_path / "u")]) == 0
    g = load_graph(tmp_path / "u")
    assert g.meta["config"]["hetero_partner"] == "uniform"
    # task-1/2 sources also link to the other class of their own task (never with "older")
    t_s, t_d = g.label_src // 2, g.label_dst // 2
    assert ((g.label_src != g.label_dst) & (t_s == t_d) & (t_s > 0)).any()
    for bad in (["prepare", "--hetero-partner", "newer", "--out", "x"], ["bench", "--seeds", "0"]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2
    assert main(["bench", "--quick", "--seeds", "1"]) == 2
    assert "seeds must be an integer >= 2" in capsys.readouterr().err
