"""Row-sharded embedding tables with all-to-all lookup and gradient return (G-Meta Sec. 3.2).

G-Meta partitions every embedding table by rows over *all* workers (model parallelism) and keeps
the dense layers replicated (data parallelism). One outer step of meta-training talks to the
table twice, never inside the inner loop:

1. :meth:`RowShardedEmbedding.lookup` (before the inner loop), three ``all_to_all_single``:
   per-peer counts (``[W, 2]`` int64: ids, ids that will carry a gradient), the ids themselves
   (int64), and the owners' rows back (``D`` values each). The received rows become one local
   autograd leaf; the inner and outer loops of every local task read from it.
2. :meth:`RowShardedEmbedding.push_grads` (after the outer backward), one ``all_to_all_single``:
   the gradient of each looked-up row that carries one goes back to its owner, which sums the
   contributions of all requesters and applies a row-wise optimiser to the touched rows only.

Rows that cannot carry a gradient are not sent back. With first-order MAML that is every row
used only by support sets (the inner gradient is treated as a constant), which is the saving the
dossier reconstructs as part of G-Meta's "optimized outer update rule".

Sharding: ``"mod"`` (row ``i`` lives on rank ``i % W``, local index ``i // W``; balances hot
low ids) or ``"range"`` (contiguous blocks of ``ceil(N / W)`` rows). Initial values are a pure
function of ``(seed, row id)`` (generated in blocks of :data:`INIT_BLOCK` rows), so every world
size and sharding starts from the same table, and a checkpoint can be re-sharded.

Gloo needs contiguous tensors and Python-int split lists; zero-size splits are fine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "INIT_BLOCK",
    "LookupHandle",
    "RowOptimizerConfig",
    "RowShardedEmbedding",
    "init_rows",
]

INIT_BLOCK = 4096
SHARDINGS = ("mod", "range")
ROW_OPTIMIZERS = ("sgd", "adagrad", "adam")


@dataclass(frozen=True)
class RowOptimizerConfig:
    """Row-wise (lazy) optimiser applied by each owner to the rows that received a gradient.

    ``sgd``: ``w -= lr g``. ``adagrad``: torch.optim.Adagrad's rule (``s += g^2``,
    ``w -= lr g / (sqrt(s) + eps)``). ``adam``: torch.optim.SparseAdam's rule (moments of touched
    rows only, bias correction by the table's global step). For SGD and Adagrad, lazy and dense
    updates are identical (a zero gradient changes nothing); for Adam they are not, and lazy is the
    recommender-system convention.
    """

    kind: str = "adam"
    lr: float = 1e-3
    eps: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.kind not in ROW_OPTIMIZERS:
            raise ValueError(f"row optimizer must be one of {ROW_OPTIMIZERS}, got {self.kind!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"row optimizer lr must be a positive finite number, got {self.lr!r}")
        b1, b2 = self.betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"adam betas must be in [0, 1), got {self.betas!r}")
        if self.eps is None:
            object.__setattr__(self, "eps", 1e-10 if self.kind == "adagrad" else 1e-8)
        if not self.eps > 0:
            raise ValueError(f"row optimizer eps must be > 0, got {self.eps!r}")


def init_rows(
    row_ids: torch.Tensor,
    dim: int,
    *,
    seed: int,
    std: float,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Initial values of the given global rows: ``N(0, std^2)``, a pure function of (seed, row).

    Rows are generated in blocks of :data:`INIT_BLOCK` (block ``b`` from a generator seeded with
    ``seed * 1_000_003 + b``), so the result does not depend on which rank asks or how many.
    """
    row_ids = row_ids.to(torch.int64).cpu()
    out = torch.empty(len(row_ids), dim, dtype=torch.float64)
    if len(row_ids) == 0:
        return out.to(dtype)
    blocks = torch.div(row_ids, INIT_BLOCK, rounding_mode="floor")
    order = torch.argsort(blocks, stable=True)
    ub, counts = torch.unique_consecutive(blocks[order], return_counts=True)
    start = 0
    g = torch.Generator()
    for b, c in zip(ub.tolist(), counts.tolist(), strict=True):
        g.manual_seed(seed * 1_000_003 + b)
        block = torch.randn(INIT_BLOCK, dim, generator=g, dtype=torch.float64) * std
        sel = order[start : start + c]
        out[sel] = block[row_ids[sel] - b * INIT_BLOCK]
        start += c
    return out.to(dtype)


@dataclass
class LookupHandle:
    """What :meth:`RowShardedEmbedding.push_grads` needs to return gradients of one lookup."""

    ids: torch.Tensor  # the requested ids, caller order
    order: torch.Tensor  # caller order -> owner-sorted order
    send_counts: list[int]  # ids sent to each owner
    send_grad_counts: list[int]  # of which carry a gradient (first in each owner block)
    recv_ids: torch.Tensor  # ids received from each requester (owner side)
    recv_counts: list[int]
    recv_grad_counts: list[int]
    version: int  # table version at lookup time
    used: bool = False
    comm_bytes: dict[str, int] = field(default_factory=dict)


def _block_first(counts: list[int], firsts: list[int], device: torch.device) -> torch.Tensor:
    """Mask over concatenated blocks of sizes ``counts``: True for the first ``firsts[p]`` of each."""
    total = sum(counts)
    if total == 0:
        return torch.zeros(0, dtype=torch.bool, device=device)
    c = torch.tensor(counts, device=device)
    starts = torch.cumsum(c, 0) - c
    block = torch.repeat_interleave(torch.arange(len(counts), device=device), c)
    pos = torch.arange(total, device=device) - starts[block]
    return pos < torch.tensor(firsts, device=device)[block]


class RowShardedEmbedding:
    """One embedding table of ``num_rows x dim``, row-sharded over the ranks of ``group``.

    Without an initialised process group (or with ``group`` of one rank and ``use_collectives``
    False) it is a plain local table and issues no collectives. Every rank of ``group`` must call
    :meth:`lookup` and :meth:`push_grads` the same number of times, in the same order (they are
    collectives), even with nothing to look up.
    """

    def __init__(
        self,
        num_rows: int,
        dim: int,
        *,
        group: Any = None,
        sharding: str = "mod",
        optimizer: RowOptimizerConfig | None = None,
        init_std: float = 0.1,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(num_rows, int) or num_rows < 1:
            raise ValueError(f"num_rows must be a positive int, got {num_rows!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if sharding not in SHARDINGS:
            raise ValueError(f"sharding must be one of {SHARDINGS}, got {sharding!r}")
        if not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std!r}")
        self.num_rows, self.dim, self.sharding = num_rows, dim, sharding
        self.group = group
        self.distributed = dist.is_available() and dist.is_initialized()
        self.world = dist.get_world_size(group) if self.distributed else 1
        self.rank = dist.get_rank(group) if self.distributed else 0
        self.device = torch.device(device)
        self.dtype = dtype
        self.optimizer = optimizer or RowOptimizerConfig()
        self.seed, self.init_std = seed, init_std
        self.rows_per_rank = math.ceil(num_rows / self.world)
        gids = self.local_global_ids()
        self.weight = init_rows(gids, dim, seed=seed, std=init_std, dtype=dtype).to(self.device)
        self.state: dict[str, torch.Tensor] = {}
        self.step_count = 0
        self.version = 0
        self._init_state()

    # ------------------------------------------------------------------ sharding
    def owner(self, ids: torch.Tensor) -> torch.Tensor:
        """Rank (within ``group``) that owns each global row id."""
        if self.sharding == "mod":
            return torch.remainder(ids, self.world)
        return torch.div(ids, self.rows_per_rank, rounding_mode="floor")

    def local_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Index into this rank's shard of global ids this rank owns."""
        if self.sharding == "mod":
            return torch.div(ids, self.world, rounding_mode="floor")
        return ids - self.rank * self.rows_per_rank

    def local_global_ids(self) -> torch.Tensor:
        """Global ids of this rank's rows, in local order."""
        if self.sharding == "mod":
            return torch.arange(self.rank, self.num_rows, self.world, dtype=torch.int64)
        lo = min(self.rank * self.rows_per_rank, self.num_rows)
        hi = min(lo + self.rows_per_rank, self.num_rows)
        return torch.arange(lo, hi, dtype=torch.int64)

    @property
    def num_local(self) -> int:
        return self.weight.shape[0]

    # ------------------------------------------------------------------ optimiser state
    def _init_state(self) -> None:
        z = torch.zeros_like(self.weight)
        kind = self.optimizer.kind
        if kind == "adagrad":
            self.state = {"sum": z}
        elif kind == "adam":
            self.state = {"exp_avg": z, "exp_avg_sq": z.clone()}
        else:
            self.state = {}
        self.step_count = 0

    def _apply(self, local: torch.Tensor, grad: torch.Tensor) -> None:
        """Row-wise optimiser step on unique local rows ``local`` with gradient ``grad``."""
        opt = self.optimizer
        self.step_count += 1
        if len(local) == 0:
            return
        w = self.weight
        if opt.kind == "sgd":
            w[local] = w[local] - opt.lr * grad
        elif opt.kind == "adagrad":
            s = self.state["sum"][local] + grad * grad
            self.state["sum"][local] = s
            w[local] = w[local] - opt.lr * grad / (s.sqrt() + opt.eps)
        else:  # lazy adam, torch.optim.SparseAdam's arithmetic
            b1, b2 = opt.betas
            m_old = self.state["exp_avg"][local]
            v_old = self.state["exp_avg_sq"][local]
            m_upd = (grad - m_old) * (1 - b1)
            v_upd = (grad.pow(2) - v_old) * (1 - b2)
            m = m_upd + m_old
            v = v_upd + v_old
            self.state["exp_avg"][local] = m
            self.state["exp_avg_sq"][local] = v
            step = self.step_count
            step_size = opt.lr * math.sqrt(1 - b2**step) / (1 - b1**step)
            w[local] = w[local] + (-step_size) * (m / (v.sqrt() + opt.eps))

    # ------------------------------------------------------------------ collectives
    def _a2a(self, out: torch.Tensor, inp: torch.Tensor, out_split, in_split) -> None:
        dist.all_to_all_single(
            out,
            inp.contiguous(),
            output_split_sizes=out_split,
            input_split_sizes=in_split,
            group=self.group,
        )

    def lookup(
        self, ids: torch.Tensor, grad_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LookupHandle]:
        """Fetch the rows of ``ids`` (1-D, unique) from their owners.

        ``grad_mask`` marks the ids whose gradient will be pushed back (default all). Returns the
        rows ``[len(ids), dim]`` as a fresh leaf that requires grad, and a handle for
        :meth:`push_grads`. Collective over ``group``.
        """
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype != torch.int64:
            raise TypeError("lookup ids must be a 1-D int64 tensor")
        n = len(ids)
        if n and (int(ids.min()) < 0 or int(ids.max()) >= self.num_rows):
            bad = ids[(ids < 0) | (ids >= self.num_rows)][:5].tolist()
            raise IndexError(f"row ids {bad} are outside the table [0, {self.num_rows})")
        if n > 1 and len(torch.unique(ids)) != n:
            raise ValueError("lookup ids must be unique (deduplicate before the lookup)")
        if grad_mask is None:
            grad_mask = torch.ones(n, dtype=torch.bool, device=ids.device)
        if grad_mask.shape != ids.shape or grad_mask.dtype != torch.bool:
            raise ValueError("grad_mask must be a bool tensor shaped like ids")
        ids = ids.to(self.device)
        grad_mask = grad_mask.to(self.device)
        owner = self.owner(ids)
        # owner-major; within an owner, gradient-carrying ids first (so owners know which)
        key = owner * 2 + (~grad_mask).to(torch.int64)
        order = torch.argsort(key, stable=True)
        send_ids = ids[order]
        send_counts = torch.bincount(owner, minlength=self.world)
        send_gcounts = torch.bincount(owner[grad_mask], minlength=self.world)
        comm: dict[str, int] = {}
        if self.distributed:
            cnt = torch.stack([send_counts, send_gcounts], 1).to(torch.int64).contiguous()
            recv_cnt = torch.empty_like(cnt)
            dist.all_to_all_single(recv_cnt, cnt, group=self.group)
            recv_counts = recv_cnt[:, 0].tolist()
            recv_gcounts = recv_cnt[:, 1].tolist()
            recv_ids = torch.empty(sum(recv_counts), dtype=torch.int64, device=self.device)
            self._a2a(recv_ids, send_ids, recv_counts, send_counts.tolist())
            out_rows = self.weight[self.local_index(recv_ids)]
            recv_rows = torch.empty(n, self.dim, dtype=self.dtype, device=self.device)
            self._a2a(recv_rows, out_rows, send_counts.tolist(), recv_counts)
            comm = {
                "counts": cnt.numel() * 8,
                "ids": n * 8,
                "rows": out_rows.numel() * out_rows.element_size(),
            }
        else:
            recv_counts, recv_gcounts = send_counts.tolist(), send_gcounts.tolist()
            recv_ids = send_ids
            recv_rows = self.weight[self.local_index(send_ids)]
        rows = torch.empty(n, self.dim, dtype=self.dtype, device=self.device)
        rows[order] = recv_rows
        handle = LookupHandle(
            ids=ids,
            order=order,
            send_counts=send_counts.tolist(),
            send_grad_counts=send_gcounts.tolist(),
            recv_ids=recv_ids,
            recv_counts=recv_counts,
            recv_grad_counts=recv_gcounts,
            version=self.version,
            comm_bytes=comm,
        )
        return rows.detach().requires_grad_(True), handle

    def push_grads(
        self, handle: LookupHandle, grad: torch.Tensor | None, *, scale: float = 1.0
    ) -> None:
        """Send the gradients of a lookup's rows to their owners and apply the row optimiser.

        ``grad`` is ``[len(ids), dim]`` in the lookup's id order (``None``: zeros); rows outside
        the lookup's ``grad_mask`` must be zero and are not sent. Owners sum the contributions,
        multiply by ``scale`` (e.g. ``1 / global task count``) and step the touched rows.
        Collective over ``group``; each handle is pushed at most once, before any other update.
        """
        if handle.used:
            raise RuntimeError("this lookup's gradients were already pushed (one push per lookup)")
        if handle.version != self.version:
            raise RuntimeError(
                "the table was updated after this lookup; push gradients of a lookup before the "
                "next update (the rows they belong to are stale)"
            )
        n = len(handle.ids)
        if grad is None:
            grad = torch.zeros(n, self.dim, dtype=self.dtype, device=self.device)
        if grad.shape != (n, self.dim):
            raise ValueError(f"grad has shape {tuple(grad.shape)}, expected {(n, self.dim)}")
        if not torch.isfinite(grad).all():
            raise FloatingPointError("non-finite embedding gradient; nothing was applied")
        handle.used = True
        g = grad.to(self.dtype)[handle.order]
        sel = _block_first(handle.send_counts, handle.send_grad_counts, self.device)
        send = g[sel].contiguous()
        rsel = _block_first(handle.recv_counts, handle.recv_grad_counts, self.device)
        gids = handle.recv_ids[rsel]
        if self.distributed:
            recv = torch.empty(len(gids), self.dim, dtype=self.dtype, device=self.device)
            self._a2a(recv, send, handle.recv_grad_counts, handle.send_grad_counts)
            handle.comm_bytes["grads"] = send.numel() * send.element_size()
        else:
            recv = send
        local = self.local_index(gids)
        uniq, inv = torch.unique(local, return_inverse=True)
        acc = torch.zeros(len(uniq), self.dim, dtype=self.dtype, device=self.device)
        acc.index_add_(0, inv, recv)
        self._apply(uniq, acc * scale)
        self.version += 1

    def skip_update(self) -> None:
        """Advance the optimiser step without a gradient (keeps Adam's bias correction in step)."""
        self.step_count += 1
        self.version += 1

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """This rank's shard: global row ids, rows, optimiser state, step, and the table's config."""
        return {
            "num_rows": self.num_rows,
            "dim": self.dim,
            "sharding": self.sharding,
            "world": self.world,
            "rank": self.rank,
            "optimizer": self.optimizer.kind,
            "step_count": self.step_count,
            "global_ids": self.local_global_ids(),
            "weight": self.weight.detach().cpu().clone(),
            "state": {k: v.detach().cpu().clone() for k, v in self.state.items()},
        }

    def load_shards(self, shards: list[dict[str, Any]]) -> None:
        """Load this rank's rows from shard state dicts saved under any world size or sharding.

        ``shards`` must together cover every row exactly once; the rows this rank owns are
        picked by global id.
        """
        if not shards:
            raise ValueError("no shards to load")
        for s in shards:
            if s["num_rows"] != self.num_rows or s["dim"] != self.dim:
                raise ValueError(
                    f"checkpoint table is {s['num_rows']}x{s['dim']}, this table is "
                    f"{self.num_rows}x{self.dim}"
                )
            if s["optimizer"] != self.optimizer.kind:
                raise ValueError(
                    f"checkpoint row optimizer is {s['optimizer']!r}, this table uses "
                    f"{self.optimizer.kind!r}"
                )
        steps = {int(s["step_count"]) for s in shards}
        if len(steps) != 1:
            raise ValueError(f"shards disagree on the optimiser step: {sorted(steps)}")
        gids = torch.cat([s["global_ids"] for s in shards])
        if len(gids) != self.num_rows or not torch.equal(
            torch.sort(gids).values, torch.arange(self.num_rows)
        ):
            raise ValueError("the shards do not cover every table row exactly once")
        pos = torch.empty(self.num_rows, dtype=torch.int64)
        pos[gids] = torch.arange(self.num_rows)
        mine = pos[self.local_global_ids()]
        self.weight = torch.cat([s["weight"] for s in shards])[mine].to(self.dtype).to(self.device)
        new_state = {}
        for k in self.state:
            new_state[k] = (
                torch.cat([s["state"][k] for s in shards])[mine].to(self.dtype).to(self.device)
            )
        self.state = new_state
        self.step_count = steps.pop()
        self.version += 1

    def full_weight(self) -> torch.Tensor:
        """The whole table ``[num_rows, dim]`` on every rank (collective; for tests and export)."""
        return self._gather_full(self.weight)

    def full_state(self, key: str) -> torch.Tensor:
        """An optimiser state tensor of the whole table (collective)."""
        return self._gather_full(self.state[key])

    def _gather_full(self, local: torch.Tensor) -> torch.Tensor:
        if not self.distributed:
            return local.detach().clone()
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(
            parts, (self.local_global_ids().numpy(), local.detach().cpu().numpy()), group=self.group
        )
        out = torch.empty(self.num_rows, self.dim, dtype=self.dtype)
        for g, w in parts:
            out[torch.from_numpy(g)] = torch.from_numpy(w).to(self.dtype)
        return out
