import csv
import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from antm2c import RAW_COLUMNS, SynthConfig, generate


def _digest(paths):
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_same_seed_identical_bytes(tmp_path):
    cfg = SynthConfig(n_rows=3_000, n_users=50, n_items=60, chunk_rows=1_000, n_parts=2, seed=5)
    a = generate(tmp_path / "a", cfg, progress_bar=False)
    b = generate(tmp_path / "b", cfg, progress_bar=False)
    assert _digest(a.parts) == _digest(b.parts)
    assert _digest([a.truth_path]) == _digest([b.truth_path])
    c = generate(tmp_path / "c", SynthConfig(**{**cfg.__dict__, "seed": 6}), progress_bar=False)
    assert _digest(a.parts) != _digest(c.parts)


def test_layout_truth_and_planted_structure(raw):
    with open(raw.parts[0], newline="") as f:
        header = next(csv.reader(f))
    assert header == list(RAW_COLUMNS)
    df = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in raw.parts])
    assert len(df) == raw.config.n_rows
    p = raw.probabilities()
    assert len(p) == len(df)
    y = df["label"].astype(int).to_numpy()
    assert abs(y.mean() - raw.config.positive_rate) < 0.05
    # the truth is informative: labels agree with the true probabilities
    assert y[p > 0.6].mean() > y[p < 0.2].mean() + 0.3
    # cold users / items appear only at or after the second cutoff
    t = pd.to_datetime(df["log_time"])
    truth = pq.read_table(raw.truth_path).to_pandas()
    cold = (truth["cold_user"] | truth["cold_item"]).to_numpy()
    assert cold.any()
    assert (t[cold] >= pd.Timestamp(raw.config.cutoffs[1])).all()
    # titles carry the item category: items of one category share title words
    cat = df["deep_features_0"].to_numpy()
    words = df["item_title"].str.split()
    vocab0 = set(np.concatenate(words[cat == "0"].to_numpy()))
    vocab1 = set(np.concatenate(words[cat == "1"].to_numpy()))
    filler = vocab0 & vocab1
    assert len(vocab0 - filler) > 3 and len(vocab1 - filler) > 3


def test_config_errors():
    with pytest.raises(ValueError, match="n_rows must be a positive int"):
        SynthConfig(n_rows=0)
    with pytest.raises(ValueError, match="scene_weights needs 5"):
        SynthConfig(scene_weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="cutoffs"):
        SynthConfig(cutoffs=("2023-08-05 00:00:00", "2023-08-03 00:00:00"))
    with pytest.raises(ValueError, match="start must look like"):
        SynthConfig(start="yesterday")
