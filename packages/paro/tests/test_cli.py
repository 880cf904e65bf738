"""CLI: the plan table, and bad arguments -> exit code 2 with a message (no traceback)."""

from __future__ import annotations

import pytest
from paro.__main__ import main


def test_plan_prints_table_and_choice(capsys):
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "chosen: NIG" in out and "ZeRO-3" in out
    assert main(["plan", "--params", "65.2", "--world-size", "64"]) == 0
    assert "chosen: IIG" in capsys.readouterr().out
    assert main(["plan", "--params", "65.2", "--world-size", "64", "--memory-gb", "1"]) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "--world-size", "10", "--group-size", "4"], "does not divide world_size=10"),
        (["plan", "--candidates", "NGN"], "at least as finely"),
        (["plan", "--params", "-3"], "positive number"),
        (["plan", "--trainable-fraction", "2"], "fraction"),
        (["demo", "--world-size", "4", "--group-size", "3"], "does not divide"),
        (["demo", "--steps", "0"], "positive integer"),
        (["bench", "--bogus"], "unrecognized arguments"),
        (["bench", "--output", "/"], "is a directory"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
