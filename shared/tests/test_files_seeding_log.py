import io
import logging
import os
import random

import numpy as np
import pytest
import torch

from shared import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    progress,
    progress_enabled,
    seed_everything,
    setup_logging,
)


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(p, b"first")
    atomic_write_bytes(p, b"second")
    assert p.read_bytes() == b"second"
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    assert oct((tmp_path / "t.txt").stat().st_mode & 0o777) != oct(0o600)


def test_atomic_write_failure_keeps_old_content_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(p, "w") as f:
        f.write("partial new")
        raise RuntimeError("crash mid-write")
    assert p.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_atomic_write_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass
    with pytest.raises(IsADirectoryError), atomic_write(tmp_path, "wb"):
        pass


def test_seed_everything_makes_every_rng_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    g1 = seed_everything(123)
    a, ga = draw(), torch.rand(2, generator=g1)
    g2 = seed_everything(123)
    b, gb = draw(), torch.rand(2, generator=g2)
    assert a == b and torch.equal(ga, gb)
    seed_everything(124)
    assert draw() != a
    for bad in (-1, 1.5, True, 2**63):
        with pytest.raises(ValueError, match="seed"):
            seed_everything(bad)


def test_progress_is_quiet_off_a_terminal(monkeypatch):
    monkeypatch.delenv("PROGRESS", raising=False)
    assert progress_enabled(io.StringIO()) is False
    bar = progress(range(3), desc="x")
    assert bar.disable is True and list(bar) == [0, 1, 2]
    monkeypatch.setenv("PROGRESS", "1")
    assert progress_enabled(io.StringIO()) is True
    monkeypatch.setenv("PROGRESS", "0")
    assert progress_enabled() is False


def test_setup_logging_is_idempotent_and_validates(monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    root = setup_logging("debug", rank=3)
    n = len(root.handlers)
    setup_logging("INFO")
    assert len(root.handlers) == n and root.level == logging.INFO
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    assert setup_logging("INFO").level == logging.WARNING
    monkeypatch.delenv("LOG_LEVEL")
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("LOUD")


def test_progress_reaches_logs_when_piped(monkeypatch, capsys):
    monkeypatch.delenv("PROGRESS", raising=False)
    assert list(progress(range(10), desc="epoch 1", log_every=4)) == list(range(10))
    err = capsys.readouterr().err.strip().splitlines()
    assert [ln.split(" in ")[0] for ln in err] == [
        "epoch 1: 4/10 it (40%)",
        "epoch 1: 8/10 it (80%)",
        "epoch 1: done 10/10 it (100%)",
    ]
    # a manual bar with a total logs every tenth of it by default, and its close
    bar = progress(total=100, desc="prepare", unit="B")
    for _ in range(50):
        bar.update(2)
    assert bar.n == 100
    bar.close()
    bar.close()  # closing twice prints once
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 11 and err[-1].startswith("prepare: done 100/100 B")
    # no total and no log_every: the time interval still reports
    bar = progress(desc="stream", log_interval=0.0)
    bar.update(3)
    bar.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("stream: 3 it") and err[-1].startswith("stream: done 3 it")
    # PROGRESS=0 and disable=True stay silent
    monkeypatch.setenv("PROGRESS", "0")
    list(progress(range(5), desc="quiet", log_every=1))
    monkeypatch.delenv("PROGRESS")
    list(progress(range(5), desc="quiet", log_every=1, disable=True))
    assert capsys.readouterr().err == ""
