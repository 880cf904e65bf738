"""Real processes over gloo: the data-parallel store build and DDP training (one spawn)."""

import json

import _bahe_workers as w
import numpy as np
import torch

from shared import spawn


def test_data_parallel_store_and_ddp_training_match_single_process(tmp_path):
    keys1, vec1, stats1 = w.build(str(tmp_path / "single"))
    single, loss1 = w.ddp_train(str(tmp_path / "single"), 4, 16)
    outs = spawn(w.build_then_train, 2, args=(str(tmp_path / "dp"), 4, 16), timeout_s=400)
    keys2, vec2, stats2, s0, l0 = outs[0]
    _, vec_r1, _, s1, l1 = outs[1]
    # one merged store, the same on both ranks, equal to the single-process build
    assert np.array_equal(vec_r1, vec2)
    assert np.array_equal(keys1, keys2)
    np.testing.assert_allclose(vec2, vec1, atol=1e-6)
    assert stats2["world_size"] == 2 and stats1["world_size"] == 1
    assert not (tmp_path / "dp" / ".staging").exists()
    man = json.loads((tmp_path / "dp" / "manifest.json").read_text())
    assert man["count"] == len(keys1) and man["version"] == 1
    # DDP over 2 ranks with half batches follows the single-process trajectory
    for k in single:
        assert torch.equal(s0[k], s1[k]), k
        torch.testing.assert_close(s0[k], single[k], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose((np.array(l0) + np.array(l1)) / 2, loss1, atol=1e-5)
