import json
import subprocess
import sys

import pytest
from bfn_solver.__main__ import main


def test_sample_oracle_suite(capsys):
    assert main(["sample", "--suite", "markov", "--nfe", "5", "--n", "200"]) == 0
    assert "bfn_solver2: (200, 12) samples with 5 NFE" in capsys.readouterr().out
    assert main(["sample", "--suite", "gmm", "--nfe", "4", "--n", "50"]) == 0
    assert "bfn_solver_pp2: (50, 64) samples with 4 NFE" in capsys.readouterr().out


def test_train_then_sample_checkpoint(tmp_path, capsys):
    ck = tmp_path / "m.pt"
    assert main(["train", "--task", "markov", "--steps", "20", "--out", str(ck)]) == 0
    assert ck.exists()
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(ck),
                "--sampler",
                "sde_bfn_solver2",
                "--nfe",
                "4",
                "--n",
                "10",
                "--out",
                str(tmp_path / "s.pt"),
            ]
        )
        == 0
    )
    assert (tmp_path / "s.pt").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "--nfe", "0"],
        ["sample", "--suite", "nope"],
        ["demo", "--nfe", "a,b"],
        ["bogus"],
    ],
)
def test_bad_cli_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2


def test_bad_values_exit_2(tmp_path, capsys):
    assert main(["sample", "--sampler", "nope", "--n", "10"]) == 2
    assert "unknown sampler" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["sample", "--checkpoint", str(bad)]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err


def test_demo_small_writes_outputs(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bfn_solver",
            "demo",
            "--out",
            str(out),
            "--nfe",
            "3,10",
            "--n",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "table.md").exists() and (out / "curves.png").exists()
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves) == {"gmm", "markov"}
    assert "bfn_original" in curves["gmm"]


@pytest.mark.slow
def test_bench_quick(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run(
        [sys.executable, "-m", "bfn_solver", "bench", "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    names = {c["name"] for c in doc["claims"]}
    assert {"nfe10_error_gmm", "speedup_markov", "order_second", "overhead_discrete"} <= names
