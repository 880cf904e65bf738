"""Session fixtures: one 4-rank spawn (and one 2-rank spawn) shared by the engine's tests,
because process start-up (importing torch in every rank) dominates their cost."""

from __future__ import annotations

import pytest
from _paro_engine_workers import STRATEGIES, ckpt_second, engine_suite

from shared import spawn


@pytest.fixture(scope="session")
def ckpt_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ckpt")
    return base, str(base / "full"), str(base / "sharded")


@pytest.fixture(scope="session")
def engine_results(ckpt_dirs):
    _, full_dir, shard_dir = ckpt_dirs
    return spawn(engine_suite, 4, args=(STRATEGIES, full_dir, shard_dir), timeout_s=500)


@pytest.fixture(scope="session")
def reshard_results(engine_results, ckpt_dirs):
    _, _, shard_dir = ckpt_dirs
    return spawn(ckpt_second, 2, args=("GGG", shard_dir), timeout_s=300)
