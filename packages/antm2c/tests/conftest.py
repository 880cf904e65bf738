from __future__ import annotations

import os

import pytest
import torch
from antm2c import PrepareConfig, SynthConfig, generate, prepare

os.environ.setdefault("PROGRESS", "0")
torch.set_num_threads(1)

SMALL = SynthConfig(
    n_rows=20_000,
    n_users=300,
    n_items=400,
    n_categories=8,
    chunk_rows=7_000,
    n_parts=2,
    image_dim=4,
    seed=3,
)


@pytest.fixture(scope="session")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    gt = generate(out, SMALL, progress_bar=False)
    return gt


@pytest.fixture(scope="session")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    rep = prepare(
        raw.out_dir, out, PrepareConfig(row_group_rows=4096, block_size=1 << 20), progress_bar=False
    )
    return out, rep
