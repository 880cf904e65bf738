"""Workers for the per-layer gathering tests (run inside the 4-rank engine spawn, or alone).

Every function returns plain data; assertions live in ``test_per_layer.py``."""

from __future__ import annotations

import threading

import torch
import torch.distributed as dist
from paro.engine import ParoDataParallel
from paro.topology import build_groups
from paro.views import ShardedTensorError
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

EQUAL_STRATEGIES = ("NIG", "IIG", "GGG", "NNN", "NGG")


class Block(nn.Module):
    def __init__(self, w: int, frozen: bool = False, spare: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(w, w)
        self.gate = nn.Linear(w, w, bias=False)
        if frozen:
            self.gate.weight.requires_grad_(False)
        self.spare = nn.Linear(2, 2) if spare else None  # trainable, never used

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(h)) * torch.sigmoid(self.gate(h)) + h


class Layered(nn.Module):
    """Input projection and head (the root unit) around ``n`` blocks in an ``nn.ModuleList``;
    block 1 has a frozen weight, with ``spare`` block 2 a parameter forward never uses."""

    def __init__(
        self, n: int = 4, w: int = 8, seed: int = 0, dtype=torch.float64, spare: bool = False
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(6, w)
        self.layers = nn.ModuleList(
            Block(w, frozen=(i == 1), spare=spare and i == 2) for i in range(n)
        )
        self.head = nn.Linear(w, 3)
        self.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


def data(rank: int, step: int, micro: int, dtype=torch.float64, batch: int = 4):
    g = torch.Generator().manual_seed(1000 * step + 10 * micro + rank)
    return (
        torch.randn(batch, 6, generator=g, dtype=dtype),
        torch.randn(batch, 3, generator=g, dtype=dtype),
    )


def adamw(ps):
    return torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1)


def _catch(fn):
    try:
        return ("ok", fn())
    except ShardedTensorError as e:
        return ("sharded", str(e))
    except Exception as e:
        return (type(e).__name__, str(e))


def _train(eng, rank, steps, accum=2, dtype=torch.float64) -> list[float]:
    losses = []
    for step in steps:
        for i in range(accum):
            x, y = data(rank, step, i, dtype)
            loss = nn.functional.mse_loss(eng(x).to(y.dtype), y)
            eng.backward(loss)
            losses.append(float(loss.detach()))
        eng.step()
    return losses


def equality(
    strategies=EQUAL_STRATEGIES, steps: int = 2, plain: tuple[str, ...] = ("NIG", "IIG")
) -> dict:
    """Per-layer (prefetch + overlap; for ``plain`` strategies also neither) vs whole-model
    gathering: final parameters (float64, AdamW, accum 2), bit for bit."""
    rank = dist.get_rank()
    groups = build_groups(2)
    out = {}
    for s in strategies:
        row = {}
        variants = [("whole", {"wrap": None}), ("layers", {})]
        if s in plain:
            variants.append(("layers_plain", {"prefetch": False, "overlap_reduction": False}))
            # gloo's own reduce-scatter instead of paro's ring (the default on gloo)
            variants.append(("whole_backend_rs", {"wrap": None, "reduce_scatter": "backend"}))
        for label, kw in variants:
            eng = ParoDataParallel(Layered(), adamw, s, groups=groups, accum_steps=2, **kw)
            _train(eng, rank, range(steps))
            row[label] = {
                "params": eng.full_parameters(),
                "units": eng.units,
                "peak": eng.meter.peak,
                "current": eng.meter.current,
            }
        out[s] = row
    return out


def schedule() -> dict:
    """Where and when the per-layer engine reduces: each layer unit's reduction is queued while
    other gradients are still to come, and runs on the communication thread."""
    rank = dist.get_rank()
    eng = ParoDataParallel(Layered(n=4), adamw, "NIG", groups=build_groups(2), accum_steps=1)
    n_params = len(eng._train_names)
    ready = [0]
    events: list[tuple[str, int, str]] = []
    for p in eng.module.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda _p: ready.__setitem__(0, ready[0] + 1))
    for u in eng._layers:
        orig = u.reducer.end_micro

        def wrapped(orig=orig) -> None:
            events.append(("run", ready[0], threading.current_thread().name))
            orig()

        u.reducer.end_micro = wrapped
    fin = eng._sched.finish

    def finish(u, fin=fin) -> None:
        if not u.launched:
            events.append(("queued", ready[0], u.name))
        fin(u)

    eng._sched.finish = finish
    x, y = data(rank, 0, 0)
    eng.backward(nn.functional.mse_loss(eng(x), y))
    eng.step()  # waits for the queued reductions
    return {"events": events, "n_params": n_params, "order": [u.name for u in eng._sched.order]}


def memory(n_layers: int = 8, width: int = 32) -> dict:
    """Transient peak (exact accounting, :class:`paro.gathering.MemoryMeter`) of one training
    step, per-layer vs whole-model, and the sizes the bound is made of."""
    rank = dist.get_rank()
    groups = build_groups(2)
    out = {}
    for s in ("NIG", "IIG"):
        row = {}
        for label, kw in (("whole", {"wrap": None}), ("layers", {})):
            eng = ParoDataParallel(
                Layered(n=n_layers, w=width, dtype=torch.float32),
                adamw,
                s,
                groups=groups,
                accum_steps=2,
                **kw,
            )
            _train(eng, rank, range(1), dtype=torch.float32)
            sizes = {}
            for u in eng._units:
                b = u.train
                if b is None:
                    continue
                p_bytes = b.full_bytes() if b.level != "N" else 0
                g_bytes = b.full_bytes() if s[1] != "N" else 0
                f_bytes = u.frozen.full_bytes() if u.frozen and u.frozen.level != "N" else 0
                sizes[u.name] = p_bytes + g_bytes + f_bytes
            row[label] = {"peak": eng.meter.peak, "sizes": sizes, "state": eng.state_bytes()}
        out[s] = row
    return out


def _misuse_one(s: str, rank: int, groups) -> dict:
    """One strategy of :func:`misuse`."""
    ref = Layered(seed=3, spare=True)
    ddp = DDP(ref, find_unused_parameters=True)
    ref_opt = adamw(list(ref.parameters()))
    model = Layered(seed=3, spare=True)
    eng = ParoDataParallel(
        model, adamw, s, groups=groups, accum_steps=2, find_unused_parameters=True
    )
    spare0 = torch.cat([p.detach().reshape(-1).clone() for p in ref.layers[2].spare.parameters()])
    row: dict = {"units": eng.units}
    w = model.layers[0].fc.weight
    for step in range(2):
        for i in range(2):
            x, y = data(rank, step, i)
            ctx = ddp.no_sync() if i == 0 else torch.enable_grad()
            with ctx:
                (nn.functional.mse_loss(ddp(x), y) / 2).backward()
            if step == 0 and i == 0:
                row["direct_backward"] = _catch(
                    lambda x=x, y=y: nn.functional.mse_loss(eng(x), y).backward()
                )
                row["after_direct_current"] = eng.meter.current
            eng.backward(nn.functional.mse_loss(eng(x), y))
            row["grad_read"] = _catch(lambda: float(w.grad.sum()))
        diffs = []
        with eng.gathered_parameters(with_grads=True):
            for p, q in zip(model.parameters(), ref.parameters(), strict=True):
                if p.requires_grad:
                    want = torch.zeros_like(q) if q.grad is None else q.grad
                    diffs.append(float((p.grad - want).abs().max()))
        row["gathered_grad_diff"] = max(diffs)
        a = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05))
        b = float(eng.clip_grad_norm_(0.05))
        row.setdefault("norms", []).append((a, b))
        ref_opt.step()
        ref_opt.zero_grad()
        eng.step()
    flat_ref = torch.cat([p.detach().reshape(-1) for p in ref.parameters() if p.requires_grad])
    row["param_diff"] = float((eng.full_parameters() - flat_ref).abs().max())
    with eng.gathered_parameters():
        row["spare_unchanged"] = bool(
            torch.equal(
                torch.cat([p.detach().reshape(-1) for p in model.layers[2].spare.parameters()]),
                spare0,
            )
        )
    row["param_read"] = _catch(lambda: float(w.detach().sum()))
    row["layer_call"] = _catch(lambda: model.layers[0](torch.ones(1, 8, dtype=torch.float64)))
    with torch.no_grad():
        y0 = eng(torch.ones(2, 6, dtype=torch.float64))
        y1 = ref(torch.ones(2, 6, dtype=torch.float64))
    row["no_grad_forward"] = float((y0 - y1).abs().max())
    row["no_grad_current"] = eng.meter.current
    # a backward that fails in the middle: clear error, engine recovers after zero_grad()
    x, y = data(rank, 9, 0)

    def boom(_g):
        raise ValueError("boom")

    def arm(_m, _a, o) -> None:
        o.register_hook(boom)

    handle = model.layers[1].register_forward_hook(arm)
    loss = nn.functional.mse_loss(eng(x), y)
    handle.remove()
    row["failing_backward"] = _catch(lambda: eng.backward(loss))
    row["failed_current"] = eng.meter.current
    row["after_fail"] = _catch(lambda: eng.backward(nn.functional.mse_loss(eng(x), y)))
    eng.zero_grad()
    row["after_zero_grad_current"] = eng.meter.current
    row["resumed"] = _catch(lambda: _train(eng, rank, range(5, 6)))
    # strict (find_unused_parameters=False): the unused layer parameter is named
    strict = ParoDataParallel(Layered(seed=3, spare=True), adamw, s, groups=groups)
    row["strict"] = _catch(lambda st=strict: st.backward(nn.functional.mse_loss(st(x), y)))
    return row


def misuse() -> dict:
    """Per-layer mode under NIG and IIG next to DDP: values, errors, clipping, unused parameters,
    no-grad forward, a failing backward, ``wrap=`` forms and their errors."""
    rank = dist.get_rank()
    groups = build_groups(2)
    out: dict = {}
    for s in ("NIG", "IIG"):
        out[s] = _misuse_one(s, rank, groups)
    # wrap= forms and errors
    m = Layered()
    out["wrap_class"] = ParoDataParallel(m, adamw, "NIG", groups=groups, wrap=Block).units
    m = Layered()
    out["wrap_list"] = ParoDataParallel(
        m, adamw, "NIG", groups=groups, wrap=[m.layers[0], m.layers[2]]
    ).units
    out["wrap_none"] = ParoDataParallel(Layered(), adamw, "NIG", groups=groups, wrap=None).units
    m = Layered()
    out["wrap_nested"] = _catch(
        lambda: ParoDataParallel(m, adamw, "NIG", groups=groups, wrap=[m.layers, m.layers[0]])
    )
    out["wrap_foreign"] = _catch(
        lambda: ParoDataParallel(Layered(), adamw, "NIG", groups=groups, wrap=[nn.Linear(2, 2)])
    )
    out["wrap_absent"] = _catch(
        lambda: ParoDataParallel(Layered(), adamw, "NIG", groups=groups, wrap=nn.Conv1d)
    )
    out["rs_bad"] = _catch(
        lambda: ParoDataParallel(Layered(), adamw, "NIG", groups=groups, reduce_scatter="tree")
    )
    out["rs_default"] = ParoDataParallel(Layered(), adamw, "NIG", groups=groups).reduce_scatter
    out["wrap_bad"] = _catch(
        lambda: ParoDataParallel(Layered(), adamw, "NIG", groups=groups, wrap="layers")
    )
    return out


def checkpoints(directory: str) -> dict:
    """Per-layer NIG: save after 2 of 4 steps; resume per-layer (sharded files), as whole-model
    (consolidated) and per-layer IIG (consolidated); bf16 per-layer vs whole-model."""
    rank = dist.get_rank()
    groups = build_groups(2)
    eng = ParoDataParallel(Layered(), adamw, "NIG", groups=groups, accum_steps=2)
    _train(eng, rank, range(2))
    eng.save_checkpoint(directory)
    _train(eng, rank, range(2, 4))
    final = eng.full_parameters()
    out: dict = {"resumed": {}}
    for label, s, kw in (
        ("layers_NIG", "NIG", {}),
        ("whole_NIG", "NIG", {"wrap": None}),
        ("layers_IIG", "IIG", {}),
    ):
        fresh = ParoDataParallel(Layered(seed=7), adamw, s, groups=groups, accum_steps=2, **kw)
        how = fresh.load_checkpoint(directory)
        _train(fresh, rank, range(2, 4))
        out["resumed"][label] = (how, float((fresh.full_parameters() - final).abs().max()))
    # mixed precision: per-layer == whole-model (bf16 compute, fp32 masters)
    bf = {}
    for label, kw in (("whole", {"wrap": None}), ("layers", {})):
        e = ParoDataParallel(
            Layered(dtype=torch.float32),
            adamw,
            "NIG",
            groups=groups,
            accum_steps=2,
            param_dtype=torch.bfloat16,
            **kw,
        )
        losses = _train(e, rank, range(3), dtype=torch.float32)
        bf[label] = (losses, e.full_parameters(), e.state_bytes())
    out["bf16_equal"] = bool(torch.equal(bf["whole"][1], bf["layers"][1]))
    out["bf16_losses_equal"] = bf["whole"][0] == bf["layers"][0]
    out["bf16_bytes"] = (bf["whole"][2], bf["layers"][2])
    out["bf16_dtype"] = str(bf["layers"][1].dtype)
    return out


def layer_suite(directory: str) -> dict:
    import time

    jobs = {
        "equality": equality,
        "schedule": schedule,
        "memory": memory,
        "misuse": misuse,
        "ckpt": lambda: checkpoints(directory),
    }
    out: dict = {"seconds": {}}
    for name, job in jobs.items():
        t0 = time.perf_counter()
        out[name] = job()
        out["seconds"][name] = time.perf_counter() - t0
    return out
