"""The CLI: plans, and the errors (exit 2 with a message) bad arguments get."""

import subprocess
import sys

import pytest


def _run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "rlhf_place", *args], capture_output=True, text=True, timeout=timeout
    )


def test_plan_prints_a_choice():
    r = _run("plan", "--actor", "7", "--critic", "0.35", "--devices", "8")
    assert r.returncode == 0, r.stderr
    assert "chosen:" in r.stdout and "MODELLED" in r.stdout


def test_plan_nothing_fits():
    r = _run("plan", "--actor", "65", "--devices", "2", "--memory-gb", "8")
    assert r.returncode == 1 and "no placement fits" in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plan", "--devices", "0"), "expected a positive integer"),
        (("train", "--strategy", "interleave", "--devices", "1"), "impossible placement"),
        (("train", "--config", "/nonexistent/cfg.json"), "cannot read config file"),
        (("train", "--strategy", "pipeline"), "invalid choice"),
        (("train", "--batch-size", "5"), "divisible by num_minibatches"),
    ],
)
def test_bad_arguments(args, message, capsys):
    """In-process (no interpreter start-up): argparse errors and config errors both exit 2."""
    from rlhf_place.__main__ import main

    try:
        code = main(list(args))
    except SystemExit as e:  # argparse
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_config_file_content(tmp_path, capsys):
    from rlhf_place.__main__ import main

    bad = tmp_path / "cfg.json"
    bad.write_text('{"batch_size": 8, "ppo": {"clip_ratio": -1}}')
    assert main(["train", "--config", str(bad)]) == 2
    assert "clip_ratio" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert "cannot read config file" in capsys.readouterr().err
