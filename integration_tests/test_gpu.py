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


def test_bfn_solver_runs_on_cuda_and_matches_cpu_in_float64():
    from bfn_solver import (
        ContinuousSchedule,
        DiscreteSchedule,
        GaussianMixtureOracle,
        MarkovChainOracle,
        sample_bfn_solver_pp2,
        sample_discrete_bfn_solver2,
    )

    sc = ContinuousSchedule(1e-3)
    g = torch.Generator().manual_seed(0)
    den = GaussianMixtureOracle(
        torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.5, 0.1, schedule=sc
    )
    x0 = torch.randn(256, 4, generator=g, dtype=torch.float64) * 1e-2
    cpu = sample_bfn_solver_pp2(den, None, 10, sc, x_init=x0, dtype=torch.float64)
    gpu = sample_bfn_solver_pp2(den, None, 10, sc, x_init=x0.cuda(), dtype=torch.float64)
    assert gpu.samples.device.type == "cuda" and gpu.nfe == cpu.nfe <= 10
    torch.testing.assert_close(gpu.samples.cpu(), cpu.samples, rtol=0, atol=1e-9)

    trans = torch.softmax(torch.randn(5, 5, generator=g, dtype=torch.float64) * 2, dim=1)
    chain = MarkovChainOracle(torch.full((5,), 0.2, dtype=torch.float64), trans, 12)
    res = sample_discrete_bfn_solver2(
        chain,
        (512, 12, 5),
        10,
        DiscreteSchedule(5, 3.0),
        device="cuda",
        generator=torch.Generator(device="cuda").manual_seed(0),
    )
    assert res.samples.device.type == "cuda" and res.nfe <= 10
    assert res.samples.shape == (512, 12) and int(res.samples.max()) < 5
