"""The streaming bound: the prepare step's exact peak RSS barely grows with a 5x input."""

import sys

from antm2c import SynthConfig, generate

from shared import time_subprocess


def _peak(src, out):
    cmd = [
        sys.executable,
        "-m",
        "antm2c",
        "prepare",
        "--input",
        str(src),
        "--out",
        str(out),
        "--json",
        "--block-size",
        str(256 << 10),
        "--row-group-rows",
        "8192",
    ]
    return time_subprocess(cmd, env={"PROGRESS": "0"}, timeout=600).peak_rss_bytes


def test_peak_memory_constant_in_input_size(tmp_path):
    cfg = dict(n_users=200, n_items=300, chunk_rows=20_000, seed=4)
    small = generate(tmp_path / "s", SynthConfig(n_rows=60_000, **cfg), progress_bar=False)
    big = generate(
        tmp_path / "b", SynthConfig(n_rows=300_000, n_parts=2, **cfg), progress_bar=False
    )
    in_small = sum(p.stat().st_size for p in small.parts)
    in_big = sum(p.stat().st_size for p in big.parts)
    assert in_big > 4.5 * in_small
    p_small = _peak(small.out_dir, tmp_path / "ps")
    p_big = _peak(big.out_dir, tmp_path / "pb")
    # holding the big input in memory would add a multiple of its size (pandas: ~2-3x its
    # bytes, +200 % peak in the benchmark); streaming stays far below that. The strict < 10 %
    # target of the claim is measured by `python -m antm2c bench`, not asserted here.
    assert p_big - p_small < 1.5 * (in_big - in_small), (p_small, p_big, in_small, in_big)
    assert p_big / p_small - 1 < 0.25, (p_small, p_big)
