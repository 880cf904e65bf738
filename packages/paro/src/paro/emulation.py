"""Two-node emulation: ranks in two network namespaces joined by a rate-limited veth link.

The paper's premise is a bandwidth hierarchy (fast intra-node, slow inter-node). On one box this
harness makes it real: namespace ``A`` holds ranks ``0..m-1`` and namespace ``B`` ranks
``m..2m-1``; each namespace has a veth end with a private address (``10.231.<k>.1`` / ``.2``,
inside namespaces this harness creates and deletes, nothing else is addressed), shaped with
``tc qdisc ... tbf rate <R>``. gloo binds to the veth address (``GLOO_SOCKET_IFNAME``), so ranks of
one namespace talk over its loopback (fast) and ranks of different namespaces cross the shaped link.
Bytes crossing are read from the veth's kernel counters (``tx_bytes``), which include TCP/IP headers
and acknowledgements.

Needs root and iproute2 (``ip``, ``tc``); :func:`availability` says why not otherwise, and callers
report the claims as unmeasured.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["EmulationConfig", "TwoNodeNetwork", "availability", "run_emulated"]


@dataclass(frozen=True)
class EmulationConfig:
    """Shape of the emulated cluster: 2 nodes of ``ranks_per_node`` ranks, ``rate_mbit`` between."""

    ranks_per_node: int = 4
    rate_mbit: float = 100.0
    timeout_s: float = 240.0

    def __post_init__(self) -> None:
        if not isinstance(self.ranks_per_node, int) or not 1 <= self.ranks_per_node <= 8:
            raise ValueError(
                f"ranks_per_node must be an int in [1, 8], got {self.ranks_per_node!r}"
            )
        if not self.rate_mbit > 0:
            raise ValueError(f"rate_mbit must be > 0, got {self.rate_mbit}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


def availability() -> tuple[bool, str]:
    """``(True, "")`` when namespaces can be made here, else ``(False, reason)``."""
    if sys.platform != "linux":
        return False, f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return False, "creating network namespaces and tc qdiscs needs root (euid 0)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"iproute2 tool {tool!r} not found (apt-get install iproute2)"
    return True, ""


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


class TwoNodeNetwork:
    """Context manager creating (and always deleting) the two namespaces and the shaped link."""

    def __init__(self, rate_mbit: float) -> None:
        tag = os.getpid() % 100_000
        self.ns = (f"paro{tag}a", f"paro{tag}b")
        self.dev = (f"pr{tag}a", f"pr{tag}b")
        octet = 1 + tag % 250
        self.addr = (f"10.231.{octet}.1", f"10.231.{octet}.2")
        self.rate_mbit = rate_mbit

    def __enter__(self) -> TwoNodeNetwork:
        ok, why = availability()
        if not ok:
            raise RuntimeError(why)
        try:
            for ns in self.ns:
                _run(["ip", "netns", "add", ns])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "link", "add", self.dev[0], "type", "veth", "peer", "name", self.dev[1]])
            for ns, dev, addr in zip(self.ns, self.dev, self.addr, strict=True):
                _run(["ip", "link", "set", dev, "netns", ns])
                _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev])
                _run(["ip", "-n", ns, "link", "set", dev, "up"])
                _run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "tc",
                        "qdisc",
                        "add",
                        "dev",
                        dev,
                        "root",
                        "tbf",
                        "rate",
                        f"{self.rate_mbit}mbit",
                        "burst",
                        "64kb",
                        "latency",
                        "500ms",
                    ]
                )
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in self.ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def run_emulated(job: str, spec: dict[str, Any], cfg: EmulationConfig) -> list[dict[str, Any]]:
    """Run ``job`` (``"allreduce"`` or ``"train"``) on 2 emulated nodes; results by rank.

    Raises ``RuntimeError`` with the reason when the harness cannot run or a rank fails.
    """
    if job not in _JOBS:
        raise ValueError(f"job must be one of {sorted(_JOBS)}, got {job!r}")
    m = cfg.ranks_per_node
    world = 2 * m
    with TwoNodeNetwork(cfg.rate_mbit) as net, tempfile.TemporaryDirectory() as tmp:
        port = 29_000 + os.getpid() % 1000
        procs = []
        for rank in range(world):
            node = rank // m
            env = {
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "GLOO_SOCKET_IFNAME": net.dev[node],
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            }
            args = {
                "job": job,
                "spec": spec,
                "rank": rank,
                "world": world,
                "m": m,
                "master": f"tcp://{net.addr[0]}:{port}",
                "dev": net.dev[node],
                "out": str(Path(tmp) / f"rank{rank}.json"),
                "timeout_s": cfg.timeout_s,
            }
            cmd = [
                "ip",
                "netns",
                "exec",
                net.ns[node],
                sys.executable,
                "-m",
                "paro.emulation",
                json.dumps(args),
            ]
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            )
        deadline = time.monotonic() + cfg.timeout_s
        try:
            for p in procs:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"emulated job {job!r} did not finish in {cfg.timeout_s:.0f}s"
            ) from None
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for rank, p in enumerate(procs):
            if p.returncode:
                tail = (p.stdout.read() if p.stdout else b"").decode(errors="replace")[-2000:]
                raise RuntimeError(f"emulated rank {rank} exited with {p.returncode}:\n{tail}")
        return [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(world)]


# --------------------------------------------------------------------------- inside a namespace


def _tx_bytes(dev: str) -> int:
    return int(Path(f"/sys/class/net/{dev}/statistics/tx_bytes").read_text())


def _job_allreduce(a: dict[str, Any]) -> dict[str, Any]:
    """Time HO-Ring, the P2P flat ring and gloo's all_reduce, interleaved; count link bytes."""
    import torch
    import torch.distributed as dist

    from paro.horing import ho_ring_all_reduce_, ring_all_reduce_
    from paro.topology import Topology

    spec, m = a["spec"], a["m"]
    topo = Topology(a["world"], m)
    numel = int(spec["numel"])
    chunks = int(spec.get("pipeline_chunks", 4))
    algos = {
        "horing": lambda t: ho_ring_all_reduce_(t, topo),
        "horing_pipelined": lambda t: ho_ring_all_reduce_(t, topo, chunks),
        "flat_ring": ring_all_reduce_,
        "gloo": dist.all_reduce,
    }
    base = torch.randn(numel, generator=torch.Generator().manual_seed(a["rank"]))
    ref = base.clone()
    dist.all_reduce(ref)
    times: dict[str, list[float]] = {k: [] for k in algos}
    link: dict[str, int] = {}
    correct = {}
    for rep in range(int(spec["repeats"]) + 1):  # first round is warm-up
        for name, fn in algos.items():
            t = base.clone()
            dist.barrier()
            tx0 = _tx_bytes(a["dev"])
            t0 = time.perf_counter()
            fn(t)
            dist.barrier()
            dt = time.perf_counter() - t0
            tx1 = _tx_bytes(a["dev"])
            if rep == 0:
                link[name] = tx1 - tx0
                correct[name] = bool(torch.allclose(t, ref, rtol=1e-4, atol=1e-4))
            else:
                times[name].append(dt)
    out: dict[str, Any] = {"times": times, "link_tx_bytes": link, "correct": correct}
    if spec.get("reduce_scatter"):
        out["reduce_scatter"] = _reduce_scatter_bytes(a, numel)
    return out


def _reduce_scatter_bytes(a: dict[str, Any], numel: int) -> dict[str, Any]:
    """Bytes node A puts on the link for one sum reduce-scatter of ``numel`` float32, gloo's
    collective vs paro's point-to-point ring, over the world and over the inter groups (the
    engine's t_gradient G-step), with the ring model's payload; results checked equal."""
    import torch
    import torch.distributed as dist

    from paro.horing import chunk_bounds, ring_reduce_scatter_
    from paro.topology import build_groups

    m, n = a["m"], a["world"]
    g = n // m
    pg = build_groups(m)
    numel -= numel % n
    base = torch.randn(numel, generator=torch.Generator().manual_seed(100 + a["rank"]))
    me = dist.get_rank()

    def gloo(parts_of: int, group: Any) -> torch.Tensor:
        out = torch.empty(numel // parts_of)
        dist.reduce_scatter(out, list(base.clone().view(parts_of, -1).unbind(0)), group=group)
        return out

    def ring(ranks: tuple[int, ...]) -> torch.Tensor:
        flat = base.clone()
        bounds = chunk_bounds(numel, len(ranks))
        ring_reduce_scatter_(flat, ranks, bounds)
        lo, hi = bounds[ranks.index(me)]
        return flat[lo:hi]

    world = tuple(range(n))
    cases = {
        "world_gloo": lambda: gloo(n, None),
        "world_ring": lambda: ring(world),
        "inter_gloo": lambda: gloo(g, pg.inter),
        "inter_ring": lambda: ring(tuple(pg.inter_ranks)),
    }
    link, results = {}, {}
    for name, fn in cases.items():
        dist.barrier()
        tx0 = _tx_bytes(a["dev"])
        results[name] = fn()
        dist.barrier()
        link[name] = _tx_bytes(a["dev"]) - tx0
    size = 4 * numel
    # ring payload node A sends: world ring 0..n-1 crosses A->B once per step, (n-1) steps of
    # S/n; inter rings: m concurrent pairs/rings, each rank sends (g-1)/g·S, half from node A
    # when g = 2 (in general (g-1)/g·S per ring member in A)
    model = {"world": (n - 1) * size // n, "inter": m * (g - 1) * size // g}
    equal = {
        "world": bool(torch.allclose(results["world_gloo"], results["world_ring"], atol=1e-5)),
        "inter": bool(torch.allclose(results["inter_gloo"], results["inter_ring"], atol=1e-5)),
    }
    return {"bytes": size, "link_tx_bytes": link, "model_payload": model, "equal": equal}


def _job_train(a: dict[str, Any]) -> dict[str, Any]:
    """Step time of several strategies on one model, interleaved step by step."""
    import torch
    from torch import nn

    from paro.engine import ParoDataParallel
    from paro.topology import build_groups

    spec = a["spec"]
    groups = build_groups(a["m"])
    width, accum = int(spec["width"]), int(spec["accum_steps"])
    engines = {}
    for label, (strategy, mode) in spec["runs"].items():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(64, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, 64),
        )
        engines[label] = ParoDataParallel(
            model,
            lambda ps: torch.optim.AdamW(ps, lr=1e-3),
            strategy,
            groups=groups,
            accum_steps=accum,
            global_comm=mode,
        )
    gen = torch.Generator().manual_seed(a["rank"])
    batches = [(torch.randn(8, 64, generator=gen), torch.randn(8, 64, generator=gen))] * accum
    steppers: dict[str, Any] = {
        label: (lambda eng=eng: eng.train_step(batches, nn.functional.mse_loss))
        for label, eng in engines.items()
    }
    sizers: dict[str, Any] = {
        label: (lambda eng=eng: sum(eng.state_bytes().values())) for label, eng in engines.items()
    }
    errors: dict[str, str] = {}
    for name in spec.get("baselines", []):
        try:
            steppers[name], sizers[name] = _BASELINES[name](a, width, accum, batches)
        except Exception as e:  # a baseline that cannot run is reported, never hidden
            errors[name] = f"{type(e).__name__}: {e}"[-600:]
    times, link = _interleaved(a["dev"], steppers, int(spec["repeats"]))
    numel = sum(p.numel() for p in next(iter(engines.values())).module.parameters())
    state_bytes = {label: int(size()) for label, size in sizers.items()}  # after the first step
    out = {
        "times": times,
        "link_tx_bytes": link,
        "numel": numel,
        "state_bytes": state_bytes,
        "baseline_errors": errors,
    }
    if spec.get("layers"):  # the per-layer step-time runs, in the same processes
        engines.clear()
        steppers.clear()
        out["layers"] = _layers_timing(a, spec["layers"])
    return out


def _job_layers(a: dict[str, Any]) -> dict[str, Any]:
    """Per-layer engine step time with prefetch and overlapped reduction vs without (same
    engine, same model and data), and whole-model gathering, interleaved step by step."""
    return _layers_timing(a, a["spec"])


def _layers_timing(a: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch import nn

    from paro.engine import ParoDataParallel
    from paro.experiment import DeepMLP
    from paro.topology import build_groups

    groups = build_groups(a["m"])
    width, accum, n_layers = int(spec["width"]), int(spec["accum_steps"]), int(spec["layers"])
    variants = {
        "overlap": {"prefetch": True, "overlap_reduction": True},
        "no_overlap": {"prefetch": False, "overlap_reduction": False},
        "whole_model": {"wrap": None},
    }
    engines = {}
    for strategy in spec["strategies"]:
        for name, kw in variants.items():
            engines[f"{strategy}/{name}"] = ParoDataParallel(
                DeepMLP(n_layers, width),
                lambda ps: torch.optim.AdamW(ps, lr=1e-3),
                strategy,
                groups=groups,
                accum_steps=accum,
                **kw,
            )
    gen = torch.Generator().manual_seed(a["rank"])
    batch = int(spec["batch"])
    batches = [
        (torch.randn(batch, width, generator=gen), torch.randn(batch, width, generator=gen))
        for _ in range(accum)
    ]
    steppers = {
        label: (lambda eng=eng: eng.train_step(batches, nn.functional.mse_loss))
        for label, eng in engines.items()
    }
    times, link = _interleaved(a["dev"], steppers, int(spec["repeats"]))
    params = {k: e.full_parameters() for k, e in engines.items()}
    rel = {}  # gloo's 4-rank sums may add in another order per buffer: not bit-equal here
    for k, v in params.items():
        ref = params[f"{k.split('/')[0]}/whole_model"]
        rel[k] = float((v - ref).norm() / ref.norm())
    return {
        "times": times,
        "link_tx_bytes": link,
        "numel": sum(p.numel() for p in DeepMLP(n_layers, width).parameters()),
        "rel_diff_to_whole_model": rel,
    }


def _interleaved(
    dev: str, steppers: dict[str, Any], repeats: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Run every stepper once per round, interleaved, ``repeats + 1`` rounds between barriers.

    Round 0 is the warm-up; it gives each stepper's link bytes (kernel counter of ``dev``); the
    other rounds give its step times.
    """
    import torch.distributed as dist

    times: dict[str, list[float]] = {k: [] for k in steppers}
    link: dict[str, int] = {}
    for rep in range(repeats + 1):
        for label, step in steppers.items():
            dist.barrier()
            tx0 = _tx_bytes(dev)
            t0 = time.perf_counter()
            step()
            dist.barrier()
            dt = time.perf_counter() - t0
            if rep == 0:
                link[label] = _tx_bytes(dev) - tx0
            else:
                times[label].append(dt)
    return times, link


def _mlp(width: int):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 64)
    )


def _baseline_ddp(a: dict[str, Any], width: int, accum: int, batches: list) -> tuple[Any, int]:
    """torch DDP, gradient all-reduce only on the last micro-step (``no_sync`` before)."""
    import contextlib

    import torch
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(_mlp(width))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        for i, (x, y) in enumerate(batches):
            ctx = model.no_sync() if i < accum - 1 else contextlib.nullcontext()
            with ctx:
                (nn.functional.mse_loss(model(x), y) / accum).backward()
        opt.step()
        opt.zero_grad()

    numel = sum(p.numel() for p in model.parameters())
    return step, lambda: 16 * numel  # fp32 params + grads + Adam m, v


def _fsdp2(a: dict[str, Any], width: int, accum: int, batches: list, hsdp: bool):
    import torch
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    m, world = a["m"], a["world"]
    if hsdp:
        mesh = init_device_mesh("cpu", (world // m, m), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh("cpu", (world,))
    model = _mlp(width)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        for i, (x, y) in enumerate(batches):
            model.set_requires_gradient_sync(i == accum - 1)
            (nn.functional.mse_loss(model(x), y) / accum).backward()
        opt.step()
        opt.zero_grad()

    local = sum(p.to_local().numel() for p in model.parameters())
    return step, lambda: 16 * local  # sharded fp32 params + grads + Adam m, v


def _baseline_deepspeed(a: dict[str, Any], width: int, accum: int, batches: list):
    """Real DeepSpeed ZeRO-3 with its default settings (fp32, CPU accelerator, gloo)."""
    host, port = a["master"].removeprefix("tcp://").rsplit(":", 1)
    os.environ.update(
        {
            "DS_ACCELERATOR": "cpu",
            "RANK": str(a["rank"]),
            "WORLD_SIZE": str(a["world"]),
            "LOCAL_RANK": str(a["rank"] % a["m"]),
            "LOCAL_SIZE": str(a["m"]),
            "MASTER_ADDR": host,
            "MASTER_PORT": port,
        }
    )
    warnings.filterwarnings("ignore")
    import deepspeed
    import deepspeed.ops
    from torch import nn

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")
    model = _mlp(width)
    config = {
        "train_micro_batch_size_per_gpu": batches[0][0].shape[0],
        "gradient_accumulation_steps": accum,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
        "zero_optimization": {"stage": 3},
        "steps_per_print": 10**9,
    }
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=config
    )

    def step() -> None:
        for x, y in batches:
            loss = nn.functional.mse_loss(engine(x), y)
            engine.backward(loss)
            engine.step()

    return step, lambda: _deepspeed_state_bytes(engine)


def _deepspeed_state_bytes(engine: Any) -> int:
    """Persistent per-rank model-state bytes of a ZeRO-3 engine (parameter partitions and
    persisted small parameters, fp32 partitions, gradient partitions, optimizer state)."""
    import torch

    total = 0
    for p in engine.module.parameters():
        t = getattr(p, "ds_tensor", None)
        if t is not None:
            total += t.numel() * t.element_size()
        if getattr(p, "ds_persist", False):
            total += p.numel() * p.element_size()
    opt = engine.optimizer
    for flat in getattr(opt, "fp32_partitioned_groups_flat", []):
        total += flat.numel() * flat.element_size()
    grads = getattr(opt, "grad_partitions_flat_buffer", None)
    if torch.is_tensor(grads):
        total += grads.numel() * grads.element_size()
    inner = getattr(opt, "optimizer", opt)
    for st in inner.state.values():
        for v in st.values():
            if torch.is_tensor(v) and v.dim() > 0:
                total += v.numel() * v.element_size()
    return total


_BASELINES = {
    "DDP": _baseline_ddp,
    "FSDP2": lambda a, w, acc, b: _fsdp2(a, w, acc, b, hsdp=False),
    "FSDP2_HSDP": lambda a, w, acc, b: _fsdp2(a, w, acc, b, hsdp=True),
    "DeepSpeed_ZeRO3": _baseline_deepspeed,
}


_JOBS = {"allreduce": _job_allreduce, "train": _job_train, "layers": _job_layers}


def _worker(a: dict[str, Any]) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=a["master"],
        rank=a["rank"],
        world_size=a["world"],
        timeout=_dt.timedelta(seconds=a["timeout_s"]),
    )
    try:
        out = _JOBS[a["job"]](a)
        out["rank"] = a["rank"]
        Path(a["out"]).write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="paro emulation worker (internal)")
    parser.add_argument("spec", help="JSON arguments written by run_emulated")
    ns = parser.parse_args()
    _worker(json.loads(ns.spec))
    _ = asdict  # keep the dataclass helpers importable for callers
