"""Real processes over gloo (one launch, shared by the tests here: start-up dominates on 2 cores).

* AntDT-DD: the gradient with uneven per-rank batches equals the full-batch gradient (DDP, float64),
  with and without micro-batch accumulation; a per-rank mean loss does not (negative control).
* The full trainer (master over gRPC, DDP, uneven sizes) ends bit-identical to an independent
  single-process re-implementation, and trains every sample exactly once.
"""

from __future__ import annotations

import pytest
import torch
from antdt.job import JobConfig, run_job, sum_mse
from antdt.master import Master, MasterConfig
from antdt.sharding import ShardConfig
from refimpl import reference_params, tiny_data, tiny_model

from shared import spawn

SIZES = (23, 9)
B = sum(SIZES)
JOB = JobConfig(dataset_size=200, features=6, hidden=8, record_indices=True)
SHARD = ShardConfig(200, 16)
JOB_SIZES = [9, 5]


def _rank_grads(micro: int | None, biased: bool) -> list[list[float]]:
    import torch.distributed as dist
    from antdt.dd import ComputeTimer, dd_backward
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank = dist.get_rank()
    x, y = tiny_data(B)
    a = sum(SIZES[:rank])
    xs, ys = x[a : a + SIZES[rank]], y[a : a + SIZES[rank]]
    ddp = DDP(tiny_model())
    timer = ComputeTimer().install(ddp)
    if biased:  # the common mistake: per-rank mean loss, DDP averages over ranks
        ((ddp(xs) - ys) ** 2).mean().backward()
    else:
        dd_backward(ddp, sum_mse, xs, ys, global_batch=B, world_size=2, max_micro_batch=micro)
        assert timer.last_ready > 0  # the comm hook saw the end of local compute
    return [p.grad.reshape(-1).tolist() for p in ddp.module.parameters()]


def _worker(address: str) -> dict:
    torch.set_num_threads(1)
    out = {k: _rank_grads(*k) for k in ((None, False), (4, False), (None, True))}
    out["job"] = run_job(JOB, address)
    from antdt.baselines import backup_workers_run
    from antdt.job import SyntheticRegression, build_model, sum_mse

    model = build_model(JOB)
    data = SyntheticRegression(JOB.dataset_size, JOB.features, JOB.seed)
    res = backup_workers_run(model, data, sum_mse, global_batch=8, steps=3, backups=1, lr=0.1,
                             speeds=(2000.0, 20.0))  # fmt: skip
    out["backup"] = (res.kept_ranks, res.samples_used, res.samples_dropped,
                     [p.detach().reshape(-1).tolist() for p in model.parameters()])  # fmt: skip
    return out


@pytest.fixture(scope="module")
def runs():
    m = Master(MasterConfig(SHARD))  # no controller: fixed uneven sizes
    m.service.set_sizes(JOB_SIZES, 0)
    with m:
        yield spawn(_worker, 2, args=(m.address,), timeout_s=400)


def _reference_grads():
    x, y = tiny_data(B)
    m = tiny_model()
    ((m(x) - y) ** 2).mean().backward()
    return [p.grad.reshape(-1) for p in m.parameters()]


def test_dd_gradient_equals_full_batch_gradient(runs):
    ref = _reference_grads()
    for micro in (None, 4):
        for r in runs:
            for g, want in zip(r[(micro, False)], ref, strict=True):
                torch.testing.assert_close(
                    torch.tensor(g, dtype=torch.float64), want, rtol=0, atol=1e-12
                )


def test_per_rank_mean_loss_is_biased(runs):
    ref = _reference_grads()
    bad = runs[0][(None, True)]
    err = max(
        float((torch.tensor(g, dtype=torch.float64) - w).abs().max())
        for g, w in zip(bad, ref, strict=True)
    )
    assert err > 1e-3


def test_trainer_matches_independent_reference_bitwise(runs):
    job = runs[0]["job"]
    assert job["params_hex"] == reference_params(JOB, SHARD, JOB_SIZES)
    assert all(s == JOB_SIZES for s in job["sizes"][:-1])


def test_trainer_trains_every_sample_exactly_once(runs):
    job = runs[0]["job"]
    seen = [i for r in job["ranks"] for i in r["indices"]]
    assert sorted(seen) == list(range(JOB.dataset_size))
    assert [r["samples"] for r in job["ranks"]] == [len(r["indices"]) for r in job["ranks"]]


def test_backup_workers_drop_the_straggler_and_equal_sgd_on_the_rest(runs):
    kept, used, dropped, params = runs[0]["backup"]
    assert kept == [[0], [0], [0]] and (used, dropped) == (12, 12)  # rank 1 always abandoned
    assert runs[1]["backup"][3] == params  # the broadcast keeps replicas identical
    from antdt.job import SyntheticRegression, build_model, sum_mse

    model = build_model(JOB)
    data = SyntheticRegression(JOB.dataset_size, JOB.features, JOB.seed)
    for step in range(3):  # plain SGD on rank 0's slices only: what backup workers trained
        x, y = data(list(range(step * 8, step * 8 + 4)))
        model.zero_grad()
        (sum_mse(model(x), y) / 4).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    for p, q in zip(model.parameters(), params, strict=True):
        torch.testing.assert_close(
            p.detach().reshape(-1), torch.tensor(q, dtype=torch.float64), rtol=0, atol=1e-12
        )
