"""shared.cli: argparse value types with messages that say what was expected."""

import argparse

import pytest

from shared.cli import nonneg_int, positive_float, positive_int, probability


@pytest.mark.parametrize(
    ("fn", "good", "value"),
    [
        (positive_int, "3", 3),
        (nonneg_int, "0", 0),
        (positive_float, "0.5", 0.5),
        (probability, "1", 1.0),
        (probability, "0", 0.0),
    ],
)
def test_accepts(fn, good, value):
    assert fn(good) == value


@pytest.mark.parametrize(
    ("fn", "bad", "message"),
    [
        (positive_int, "0", "expected a positive integer, got 0"),
        (positive_int, "x", "expected a positive integer, got 'x'"),
        (positive_int, "1.5", "expected a positive integer"),
        (nonneg_int, "-1", "expected an integer >= 0, got -1"),
        (positive_float, "-3", "expected a positive number, got -3.0"),
        (positive_float, "nan", "expected a positive number, got 'nan'"),
        (positive_float, "inf", "expected a positive number"),
        (probability, "1.5", "expected a number in [0, 1], got 1.5"),
    ],
)
def test_rejects_with_a_message(fn, bad, message):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        fn(bad)
    assert message in str(e.value)


def test_argparse_turns_it_into_exit_2(capsys):
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=positive_int)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--steps", "0"])
    assert e.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err
