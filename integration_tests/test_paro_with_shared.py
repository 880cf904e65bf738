"""paro on shared: the engine runs in ranks started by shared.spawn, on the device the rank owns
(gloo/CPU here, nccl/CUDA on a GPU host), and matches plain single-process training."""

import pytest
import torch
from _integration_workers import paro_engine_matches_plain_training

from shared import spawn

BACKENDS = ["gloo"] + (["nccl"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("strategy", ["NIG", "GGG", "NNN"])
def test_single_rank_engine_equals_plain_training(backend, strategy):
    (rel,) = spawn(
        paro_engine_matches_plain_training, 1, args=(strategy, 3), backend=backend, timeout_s=120
    )
    assert rel <= 1e-6
