"""``python -m antdt master`` (the master in its own process) and ``python -m antdt run`` (a master
plus torchrun, with the environment restarts need)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .client import ENV_ADDR, ENV_TOKEN, wait_for_port_file
from .controller import ControllerConfig, RestartCostModel
from .master import Master, MasterConfig
from .sharding import ShardConfig

__all__ = [
    "add_master_args",
    "master_config_from_args",
    "run_ray",
    "run_torchrun",
    "serve",
    "torchrun_env",
]


def _write_small(path: str, text: str) -> None:
    """Atomic small-file write (temp file, fsync, rename). The master process stays torch-free
    (``shared`` imports torch, which costs seconds per start on a loaded box), hence not
    :func:`shared.atomic_write_text` here."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pos(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def add_master_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-size", type=_pos, required=True)
    p.add_argument("--shard-size", type=_pos, default=64)
    p.add_argument("--epochs", type=_pos, default=1)
    p.add_argument("--shuffle", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lease-timeout", type=float, default=10.0)
    p.add_argument("--max-retries", type=int, default=3)
    p.add_argument(
        "--mode",
        choices=("off", "dd", "nd", "none"),
        default="dd",
        help="controller: off = equal batches, dd, nd; none = async shard service only",
    )
    p.add_argument("--global-batch", type=_pos, default=64)
    p.add_argument("--world-size", type=_pos, default=2)
    p.add_argument("--window", type=_pos, default=4)
    p.add_argument("--replan-every", type=_pos, default=2)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--lam", type=float, default=1.3)
    p.add_argument("--persist-windows", type=_pos, default=3)
    p.add_argument("--restart-cost", type=float, default=10.0, help="seconds (cost model C)")
    p.add_argument("--restart-margin", type=float, default=0.2)
    p.add_argument("--max-restarts", type=int, default=1)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument(
        "--token-env",
        default=None,
        help=f"name of an environment variable holding the token (e.g. {ENV_TOKEN})",
    )
    p.add_argument("--port-file", default=None, help="write host:port here once serving")
    p.add_argument(
        "--status-file", default=None, help="write the final status JSON here on shutdown"
    )


def master_config_from_args(a: argparse.Namespace) -> MasterConfig:
    token = None
    if a.token_env:
        token = os.environ.get(a.token_env)
        if not token:
            raise SystemExit(f"--token-env {a.token_env}: that environment variable is empty")
    shard = ShardConfig(
        a.dataset_size, a.shard_size, a.epochs, a.shuffle, a.seed, a.lease_timeout, a.max_retries
    )
    ctl = None
    if a.mode != "none":
        ctl = ControllerConfig(
            mode=a.mode,
            global_batch=a.global_batch,
            world_size=a.world_size,
            window=a.window,
            replan_every=a.replan_every,
            warmup_steps=a.warmup_steps,
            lam=a.lam,
            persist_windows=a.persist_windows,
            max_restarts=a.max_restarts,
            cost_model=RestartCostModel(a.restart_cost, a.restart_margin),
        )
    return MasterConfig(shard, ctl, host=a.host, port=a.port, token=token)


def serve(a: argparse.Namespace) -> int:
    try:
        cfg = master_config_from_args(a)
    except ValueError as e:
        print(f"antdt master: {e}", file=sys.stderr)
        return 2
    m = Master(cfg)
    m.start()
    signal.signal(signal.SIGTERM, lambda *_: m._stop.set())
    if a.port_file:
        _write_small(a.port_file, m.address)
    print(f"antdt master serving on {m.address}", flush=True)
    try:
        while not m.wait(0.5):  # short waits: signal handlers run promptly
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if a.status_file:
            _write_small(a.status_file, json.dumps(m.status(timeline=True), default=str))
        m.stop()
    return 0


def torchrun_env(address: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for torchrun workers: the master address, one thread per rank, and the gloo
    restart fix (each restart gets a fresh store: without it a restarted gloo group can hang on
    the previous attempt's peer addresses)."""
    env = dict(os.environ if base is None else base)
    env[ENV_ADDR] = address
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    return env


def run_torchrun(torchrun_args: list[str], address: str, timeout_s: float | None = None) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args]
    return subprocess.run(cmd, env=torchrun_env(address), timeout=timeout_s).returncode


def run(a: argparse.Namespace, torchrun_args: list[str]) -> int:
    """Start a master (unless ``--master ADDR``), then torchrun with ``torchrun_args``."""
    if not torchrun_args:
        print("antdt run: give torchrun arguments after '--'", file=sys.stderr)
        return 2
    if a.master:
        return run_torchrun(torchrun_args, a.master)
    with tempfile.TemporaryDirectory() as d:
        port_file = str(Path(d) / "master.addr")
        cmd = [sys.executable, "-m", "antdt", "master", "--port-file", port_file, *a.master_args]
        proc = subprocess.Popen(cmd)
        try:
            address = wait_for_port_file(port_file, 60)
            code = run_torchrun(torchrun_args, address)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return code


def run_ray(a: argparse.Namespace, master_args: list[str], extra: list[str]) -> int:
    """``python -m antdt run --backend ray``: the master and the ranks as Ray actors
    (:func:`antdt.ray_backend.ray_train`); the job is :mod:`antdt.job`'s, from ``--job``."""
    if extra:
        print(
            "antdt run --backend ray: torchrun arguments after '--' do not apply", file=sys.stderr
        )
        return 2
    if a.master:
        print(
            "antdt run --backend ray: the master runs as a Ray actor; drop --master",
            file=sys.stderr,
        )
        return 2
    if not a.job:
        print("antdt run --backend ray: give the job with --job JOB.json", file=sys.stderr)
        return 2
    mp = argparse.ArgumentParser(prog="python -m antdt run --backend ray (master options)")
    add_master_args(mp)
    ma = mp.parse_args(master_args)
    from .job import JobConfig

    try:
        text = a.job
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        job = JobConfig.from_json(text)
        cfg = master_config_from_args(ma)
    except (OSError, ValueError) as e:
        print(f"antdt run --backend ray: {e}", file=sys.stderr)
        return 2
    from .ray_backend import ray_train

    out = ray_train(job, cfg, ma.world_size, max_restarts=a.ray_max_restarts, address=a.ray_address)
    if ma.status_file:
        _write_small(ma.status_file, json.dumps(out["master_status"], default=str))
    print(
        f"antdt on Ray: {out['world_size']} ranks, {out['restart_count']} restart(s), "
        f"final loss {out['final_loss']:.6g}"
    )
    return 0
