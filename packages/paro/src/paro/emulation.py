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
    return {"times": times, "link_tx_bytes": link, "correct": correct}


def _job_train(a: dict[str, Any]) -> dict[str, Any]:
    """Step time of several strategies on one model, interleaved step by step."""
    import torch
    import torch.distributed as dist
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
    times: dict[str, list[float]] = {k: [] for k in engines}
    link: dict[str, int] = {}
    for rep in range(int(spec["repeats"]) + 1):
        for label, eng in engines.items():
            dist.barrier()
            tx0 = _tx_bytes(a["dev"])
            t0 = time.perf_counter()
            eng.train_step(batches, nn.functional.mse_loss)
            dist.barrier()
            dt = time.perf_counter() - t0
            if rep == 0:
                link[label] = _tx_bytes(a["dev"]) - tx0
            else:
                times[label].append(dt)
    numel = sum(p.numel() for p in next(iter(engines.values())).module.parameters())
    return {"times": times, "link_tx_bytes": link, "numel": numel}


_JOBS = {"allreduce": _job_allreduce, "train": _job_train}


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
