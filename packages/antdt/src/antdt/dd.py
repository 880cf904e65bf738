"""AntDT-DD gradient math: uneven per-rank batches under a fixed global batch, unbiased.

Rank ``i`` trains ``b_i`` samples with ``sum_i b_i = B``. Its loss is ``sum_{x in batch_i} l(x) / B``
and the gradients are summed over ranks, which is exactly the gradient of the mean loss over the
global batch. DDP *averages* over the ``W`` ranks, so with DDP the local loss is scaled by ``W``:
``L_i = W * sum l / B``. (Plain DDP with a per-rank *mean* loss over uneven ``b_i`` over-weights the
samples of the small-batch ranks: biased. The tests show both.)

A rank whose share exceeds its memory (``max_micro_batch``) splits it into micro-batches and
accumulates; with DDP every micro-batch but the last runs under ``no_sync()`` so each rank does
exactly one synchronising backward per step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

__all__ = ["ComputeTimer", "dd_backward", "loss_scale", "micro_batches"]


def loss_scale(global_batch: int, world_size: int, *, ddp_average: bool = True) -> float:
    """Factor for a per-rank *sum* loss: ``W / B`` under DDP's averaging, ``1 / B`` with a SUM
    allreduce."""
    if global_batch < 1 or world_size < 1:
        raise ValueError(
            f"global_batch and world_size must be >= 1, got {global_batch}, {world_size}"
        )
    return (world_size if ddp_average else 1) / global_batch


def micro_batches(n: int, max_micro_batch: int | None) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(n)`` in chunks of at most ``max_micro_batch``;
    one empty chunk when ``n == 0`` (the rank must still join the allreduce)."""
    if max_micro_batch is not None and max_micro_batch < 1:
        raise ValueError(f"max_micro_batch must be >= 1, got {max_micro_batch}")
    if n == 0:
        return [(0, 0)]
    m = max_micro_batch or n
    return [(a, min(n, a + m)) for a in range(0, n, m)]


class ComputeTimer:
    """Compute-only time of a DDP backward: a comm hook records when each gradient bucket becomes
    ready; the last one marks the end of local compute (the allreduce wait comes after it)."""

    def __init__(self) -> None:
        self.last_ready = 0.0

    def install(self, ddp: DDP) -> ComputeTimer:
        import torch.distributed as dist

        def hook(state: ComputeTimer, bucket):
            state.last_ready = time.perf_counter()
            world = dist.get_world_size()
            fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
            return fut.then(lambda f: f.value()[0].div_(world))

        ddp.register_comm_hook(self, hook)
        return self


def dd_backward(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    global_batch: int,
    world_size: int,
    max_micro_batch: int | None = None,
    ddp_average: bool | None = None,
) -> float:
    """Accumulate this rank's share of the global-batch gradient into ``.grad``; returns the
    unscaled sum of the per-sample losses. ``loss_fn(pred, y)`` must return the **sum** over the
    batch (``reduction="sum"``). ``ddp_average`` defaults to ``isinstance(model, DDP)``."""
    is_ddp = isinstance(model, DDP)
    avg = is_ddp if ddp_average is None else ddp_average
    scale = loss_scale(global_batch, world_size, ddp_average=avg)
    chunks = micro_batches(len(x), max_micro_batch)
    total = 0.0
    for i, (a, b) in enumerate(chunks):
        last = i == len(chunks) - 1
        ctx = model.no_sync() if (is_ddp and not last) else contextlib.nullcontext()
        with ctx:
            out = model(x[a:b])
            loss = loss_fn(out, y[a:b])
            (loss * scale).backward()
        total += float(loss.detach())
    return total
