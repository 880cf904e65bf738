"""kpod + paro: KPOD's weighted distillation loss (Eq. 15) on a Hugging Face student trains under
PaRO's sharded data-parallel engine (2 gloo ranks, real processes) exactly like single-process
training on whole batches."""

import pytest
from test_kpod_paro_workers import kpod_loss_under_paro

from shared import spawn


@pytest.mark.parametrize("strategy", ["NIG", "GGG"])
def test_kpod_loss_under_paro_equals_single_process(strategy):
    rels = spawn(kpod_loss_under_paro, 2, args=(strategy, 2), timeout_s=600)
    assert max(rels) <= 1e-5
