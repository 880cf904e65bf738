"""The master over real gRPC: typed calls, tokens, binding policy, malformed messages, CLI."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from antdt.client import MasterClient, RequestRejected
from antdt.controller import ControllerConfig
from antdt.master import Master, MasterConfig
from antdt.protocol import SERVICE, msg
from antdt.sharding import END, WAIT, Lease, OffsetMismatchError, ShardConfig, StaleLeaseError


@pytest.fixture
def master():
    m = Master(
        MasterConfig(
            ShardConfig(40, 10, lease_timeout_s=30), ControllerConfig(global_batch=8, world_size=2)
        )
    )
    m.start()
    yield m
    m.stop()


def test_roundtrip_async_and_sync(master):
    c = MasterClient(master.address, timeout_s=10)
    lease = c.acquire("w0")
    assert isinstance(lease, Lease) and (lease.start, lease.end) == (0, 10)
    assert c.commit(lease, 0, 4).committed == 4
    assert c.commit(lease, 0, 4).duplicate
    with pytest.raises(OffsetMismatchError):
        c.commit(lease, 6, 8)
    assert c.heartbeat("w0") == 1
    assert c.fail_worker("w0") == [0]
    with pytest.raises(StaleLeaseError):
        c.commit(lease, 4, 10)
    # drain the rest
    while True:
        r = c.acquire("w1")
        if r is END:
            break
        assert r is not WAIT
        c.commit(r, r.start, r.end)
    assert c.status()["finished"]
    c.close()


def test_sync_steps_snapshot_restore(master):
    c = MasterClient(master.address, timeout_s=10)
    p0 = c.plan_step(0, 1, 2)
    assert p0.sizes == (4, 4) and p0.indices(1) == [4, 5, 6, 7] and p0.ranges[0] == ()
    c.commit_step(0, p0.generation)
    snap = c.snapshot()
    p1 = c.plan_step(1, 0, 2)
    c.restore(snap)
    with pytest.raises(StaleLeaseError):
        c.commit_step(1, p1.generation)  # planned before the restore
    p1b = c.plan_step(1, 0, 2)
    assert p1b.indices(0) == p1.indices(0) and p1b.generation == p1.generation + 1
    with pytest.raises(RequestRejected, match="not JSON"):
        c.call("Restore", msg("JsonBlob", json="{nope"))
    with pytest.raises(RequestRejected, match="lacks"):
        c.call("Restore", msg("JsonBlob", json="{}"))
    with pytest.raises(RequestRejected, match="rank"):
        c.plan_step(1, 5, 2)
    with pytest.raises(RequestRejected, match="compute_s"):
        c.call(
            "ReportStats", msg("StatsRequest", rank=0, step=0, samples=1, compute_s=float("nan"))
        )
    c.close()


def test_malformed_bytes_are_rejected_and_change_nothing(master):
    ch = grpc.insecure_channel(master.address)
    before = master.service.counts()
    for method, payload in [
        ("Commit", b"\xff\xff\xff"),  # corrupt wire format
        ("Acquire", b"\x08\x01"),  # a field outside the schema
        ("Acquire", b""),  # empty worker id
        ("Commit", msg("CommitRequest", worker="w", shard_id=99).SerializeToString()),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(f"/{SERVICE}/{method}")(payload, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, e.value.details())
    assert master.service.counts() == before
    ch.close()


def test_token_required_and_checked():
    with pytest.raises(ValueError, match="token"):
        MasterConfig(ShardConfig(10), host="0.0.0.0")
    cfg = MasterConfig(ShardConfig(10, 5), token="s3cret-token")
    with Master(cfg) as m:
        with pytest.raises(PermissionError):
            MasterClient(m.address, token="wrong-token", timeout_s=10).acquire("w")
        with pytest.raises(PermissionError):
            MasterClient(m.address, token="", timeout_s=10).acquire("w")
        assert isinstance(
            MasterClient(m.address, token="s3cret-token", timeout_s=10).acquire("w"), Lease
        )


def test_cli_rejects_bad_arguments():
    r = subprocess.run(
        [sys.executable, "-m", "antdt", "master", "--dataset-size", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "dataset-size" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "antdt", "master", "--dataset-size", "10", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "token" in r.stderr


def test_run_cli_needs_torchrun_arguments_and_valid_master_options():
    r = subprocess.run(
        [sys.executable, "-m", "antdt", "run", "--dataset-size", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "torchrun arguments" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "antdt", "run", "--dataset-size", "-3", "--", "x.py"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "dataset-size" in r.stderr
