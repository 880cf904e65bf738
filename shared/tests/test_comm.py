import pytest
import torch
from _shared_workers import captured_reference, every_op, nested_recorders

from shared import CommLog, CommOp, record_comm, spawn

WORLD = (0, 1, 2, 3)


def test_gloo_has_all_to_all_with_the_pinned_torch(has_a2a):
    # constraints.txt pins torch 2.13, whose gloo has all_to_all; older builds may lack it
    if torch.__version__.startswith("2.13"):
        assert has_a2a


@pytest.fixture(scope="module")
def spawned():
    return spawn(every_op, 4, timeout_s=90)


@pytest.fixture(scope="module")
def has_a2a(spawned):
    return spawned[0][0]


@pytest.fixture(scope="module")
def recorded(spawned):
    return [ops for _, ops in spawned]


def _ops(recorded, rank):
    return [
        CommOp(kind=k, nbytes=b, group_ranks=g, rank=rank, peer=p, sent_bytes=s)
        for k, b, g, p, s, _ in recorded[rank]
    ]


def test_collective_bytes_are_exact(recorded, has_a2a):
    for rank in range(4):
        ops = [(k, b, g) for k, b, g, *_ in recorded[rank]]
        expected_collectives = [
            ("all_reduce", 40, WORLD),
            ("broadcast", 24, WORLD),
            ("reduce", 20, WORLD),
            ("all_gather", 48, WORLD),
            ("all_gather_into_tensor", 16, WORLD),
            ("reduce_scatter", 32, WORLD),
            ("reduce_scatter_tensor", 48, WORLD),
            ("all_to_all", 32, WORLD),
            # uneven all_to_all_single: 1+2+3+4 rows of 2 float32
            ("all_to_all_single", 80, WORLD),
        ]
        if not has_a2a:  # this torch's gloo has no all_to_all (the op was not issued)
            expected_collectives.remove(("all_to_all", 32, WORLD))
        assert ops[: len(expected_collectives)] == expected_collectives
        assert ops[-1] == ("barrier", 0, WORLD)


def test_subgroup_and_point_to_point(recorded):
    r0, r1, r2, r3 = (_ops(recorded, r) for r in range(4))
    log0 = CommLog(r0)
    assert log0.filter("all_reduce", group=(0, 1))[0].nbytes == 36
    assert CommLog(r2).filter("all_reduce", group=(0, 1)) == []  # rank 2 is not in that group
    send = log0.filter("send")[0]
    assert (send.nbytes, send.peer) == (44, 1)
    recv = CommLog(r1).filter("recv")[0]
    assert (recv.nbytes, recv.peer) == (44, 0)
    # batch_isend_irecv: recorded as its isend/irecv, never also as nested ops
    for rank, ops in enumerate((r0, r1, r2, r3)):
        log = CommLog(ops)
        first_isend, first_irecv = log.filter("isend")[0], log.filter("irecv")[0]
        assert (first_isend.nbytes, first_isend.peer) == (16, (rank + 1) % 4)
        assert (first_irecv.nbytes, first_irecv.peer) == (16, (rank - 1) % 4)
        assert len(log.filter("isend")) == (2 if rank == 2 else 1)
        assert len(log.filter("irecv")) == (2 if rank == 3 else 1)
    assert [(o.nbytes, o.peer) for o in CommLog(r2).filter("isend")] == [(16, 3), (16, 3)]
    assert [(o.nbytes, o.peer) for o in CommLog(r3).filter("irecv")] == [(16, 2), (16, 2)]


def test_totals_and_sent_bytes(recorded, has_a2a):
    log = CommLog(_ops(recorded, 0))
    if has_a2a:
        a2a = log.filter("all_to_all")[0]
        assert a2a.sent_bytes == 24  # 3 of the 4 chunks leave the rank
    a2as = log.filter("all_to_all_single")[0]
    assert a2as.sent_bytes == 80 - 1 * 8  # rank 0 keeps its own 1 row
    assert log.by_kind()["all_reduce"] == {"count": 2, "bytes": 76}
    assert log.total_bytes(("send", "recv")) == 44


def test_ring_model(recorded):
    ops = recorded[0]
    ring = {k: r for k, _, _, _, _, r in ops}
    all_reduces = [r for k, _, _, _, _, r in ops if k == "all_reduce"]
    assert all_reduces == [pytest.approx(2 * 3 / 4 * 40), pytest.approx(2 * 1 / 2 * 36)]
    assert ring["all_gather"] == 3 * 48
    assert ring["reduce_scatter_tensor"] == pytest.approx(3 / 4 * 48)
    assert ring["send"] == 44


def test_recorders_nest_and_ignore_ops_outside():
    outer, inner = spawn(nested_recorders, 2, timeout_s=60)[0]
    assert (outer, inner) == (16 + 32, 32)


def test_recorder_without_process_group_records_nothing():
    with record_comm() as log:
        torch.ones(3).sum()
    assert log.ops == [] and log.total_bytes() == 0


def test_references_captured_at_library_start_up_are_seen():
    assert spawn(captured_reference, 2, timeout_s=60) == [20, 20]


def test_install_comm_hooks_is_idempotent_and_transparent():
    import torch.distributed as dist

    from shared import install_comm_hooks

    install_comm_hooks()
    first = dist.all_reduce
    install_comm_hooks()
    assert dist.all_reduce is first
    assert first.__shared_comm_original__ is not first  # a wrapper around torch's own function
