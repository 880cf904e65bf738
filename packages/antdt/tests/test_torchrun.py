"""torchrun end to end (slow: every worker start imports torch, and restarts re-rendezvous).

* Two "nodes" (two torchrun invocations, c10d rendezvous on 127.0.0.1), rank 1 SIGKILLed at step
  4: torchrun restarts both nodes' workers, they resume from the checkpoint + master snapshot,
  and the final float64 parameters are bit-identical to an independent uninterrupted run.
* AntDT-ND on one node: a persistent emulated straggler; the controller orders KILL_RESTART
  (restart cost 0 in the cost model), the agent checkpoints and exits, torchrun relaunches, the
  straggler comes back healthy, and every sample is still committed exactly once.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest
from antdt.client import MasterClient, wait_for_port_file
from antdt.job import JobConfig
from antdt.launch import torchrun_env
from antdt.sharding import ShardConfig
from refimpl import reference_params

from shared import find_free_port

pytestmark = pytest.mark.slow
TIMEOUT = 560


def _master(tmp, *args):
    port_file = str(tmp / "master.addr")
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "antdt",
            "master",
            "--port-file",
            port_file,
            "--status-file",
            str(tmp / "status.json"),
            *args,
        ]
    )
    return p, wait_for_port_file(port_file, 120)


def _torchrun(addr, cfg, nnodes, nproc, port):
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={nnodes}", f"--nproc-per-node={nproc}", "--max-restarts=1",
        "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=antdt-test",
        "-m", "antdt.job", "--config", json.dumps(cfg),
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, env=torchrun_env(addr), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(procs, master, addr):
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            outs.append((p.returncode, out[-3000:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        with contextlib.suppress(Exception):
            MasterClient(addr, timeout_s=10).shutdown()
        master.wait(30)
    return outs


def test_two_nodes_killed_rank_bit_identical(tmp_path):
    cfg = JobConfig(dataset_size=240, features=6, hidden=8, checkpoint_dir=str(tmp_path / "ck"),
                    checkpoint_every=3, output=str(tmp_path / "out.json"),
                    inject=[{"kind": "kill", "rank": 1, "step": 4}])  # fmt: skip
    master, addr = _master(tmp_path, "--dataset-size", "240", "--shard-size", "16", "--global-batch", "20",
                           "--world-size", "2", "--mode", "off")  # fmt: skip
    port = find_free_port()
    procs = [_torchrun(addr, cfg.__dict__, 2, 1, port) for _ in range(2)]
    outs = _finish(procs, master, addr)
    assert all(code == 0 for code, _ in outs), outs
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["restart_count"] == 1 and out["world_size"] == 2
    assert out["ranks"][0]["start_step"] == 3  # resumed after the step-2 checkpoint
    assert out["params_hex"] == reference_params(cfg, ShardConfig(240, 16), [10, 10])


def test_nd_kill_restart_of_persistent_straggler(tmp_path):
    cfg = JobConfig(dataset_size=600, features=6, hidden=8, checkpoint_dir=str(tmp_path / "ck"),
                    output=str(tmp_path / "out.json"),
                    inject=[{"kind": "speed", "speeds": [400, 100], "until_restart": True}])  # fmt: skip
    master, addr = _master(tmp_path, "--dataset-size", "600", "--shard-size", "20", "--global-batch", "20",
                           "--world-size", "2", "--mode", "nd", "--restart-cost", "0",
                           "--persist-windows", "2", "--window", "2")  # fmt: skip
    procs = [_torchrun(addr, cfg.__dict__, 1, 2, find_free_port())]
    outs = _finish(procs, master, addr)
    assert outs[0][0] == 0, outs
    status = json.loads((tmp_path / "status.json").read_text())
    kinds = [a["kind"] for a in status["actions"]]
    assert "kill_restart" in kinds and "restore" in kinds
    assert status["finished"] and status["counts"]["committed_samples"] == 600
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["restart_count"] == 1
