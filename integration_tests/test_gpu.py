"""GPU smoke checks: the same code paths on CUDA with nccl. Skipped (with the reason) on machines
without a GPU, which is every CI machine; run them on a GPU host with
`pytest integration_tests/test_gpu.py`."""

import pytest
import torch
from _integration_workers import cuda_collectives

from shared import PeakMemory, default_backend, spawn, time_callable

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_nccl_is_the_default_backend_with_cuda():
    assert default_backend() == "nccl"


def test_spawned_nccl_rank_runs_collectives_with_accounting():
    world = torch.cuda.device_count()  # one rank per GPU (nccl rejects two ranks on one GPU)
    (r, *_) = spawn(cuda_collectives, world, args=(1 << 20,), backend=None, timeout_s=300)
    assert r["backend"] == "nccl" and r["device"] == "cuda:0"
    assert r["sum"] == world * (world + 1) / 2
    assert r["bytes"] == [4 << 20, 4 << 20]


def test_cuda_peak_memory_and_synchronised_timing():
    with PeakMemory() as mem:
        x = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        x.fill_(1)
        del x
    assert mem.cuda_peak_bytes >= 256 << 20
    a = torch.randn(2048, 2048, device="cuda")
    t = time_callable(lambda: a @ a, repeats=3, warmup=1, sync=torch.cuda.synchronize)
    assert t.median > 0
