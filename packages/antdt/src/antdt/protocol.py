"""The wire schema of the master service (protobuf messages over gRPC).

No codegen step: the message descriptors are built at import time from a
``descriptor_pb2.FileDescriptorProto`` written here in Python, and the message classes come from
``message_factory.GetMessageClass``. Generated ``*_pb2`` modules embed a protobuf gencode version
check that breaks when the runtime protobuf differs; this way works with any protobuf >= 4.21.

Every request is parsed from raw bytes inside the handler (so a malformed message gets a clear
``INVALID_ARGUMENT`` instead of gRPC's generic deserialisation failure); nothing is ever unpickled.
Snapshots and status travel as JSON strings and are validated on arrival.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["MESSAGES", "METHODS", "PACKAGE", "SERVICE", "msg"]

PACKAGE = "antdt.v1"
SERVICE = "antdt.v1.Master"

_T = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "string": _T.TYPE_STRING,
    "int64": _T.TYPE_INT64,
    "int32": _T.TYPE_INT32,
    "double": _T.TYPE_DOUBLE,
    "bool": _T.TYPE_BOOL,
}

# message name -> [(field, type, repeated)]
_SPEC: dict[str, list[tuple[str, str, bool]]] = {
    "Empty": [],
    "Ack": [("ok", "bool", False), ("info", "string", False)],
    "WorkerRequest": [("worker", "string", False)],
    "AcquireReply": [
        ("status", "int32", False),  # 0 lease, 1 wait, 2 end
        ("shard_id", "int64", False),
        ("lease_id", "int64", False),
        ("generation", "int64", False),
        ("start", "int64", False),
        ("end", "int64", False),
        ("epoch", "int64", False),
    ],
    "CommitRequest": [
        ("worker", "string", False),
        ("shard_id", "int64", False),
        ("lease_id", "int64", False),
        ("generation", "int64", False),
        ("from_off", "int64", False),
        ("to_off", "int64", False),
    ],
    "CommitReply": [
        ("committed", "int64", False),
        ("done", "bool", False),
        ("duplicate", "bool", False),
    ],
    "HeartbeatReply": [("leases", "int32", False)],
    "PlanRequest": [("step", "int64", False), ("rank", "int32", False), ("world", "int32", False)],
    "PlanReply": [
        ("step", "int64", False),
        ("generation", "int64", False),
        ("sizes", "int64", True),
        ("starts", "int64", True),  # this rank's ranges
        ("ends", "int64", True),
        ("end_of_data", "bool", False),
        ("restart_rank", "int32", False),
    ],
    "CommitStepRequest": [("step", "int64", False), ("generation", "int64", False)],
    "JsonBlob": [("json", "string", False)],
    "StatsRequest": [
        ("rank", "int32", False),
        ("step", "int64", False),
        ("samples", "int64", False),
        ("compute_s", "double", False),
        ("step_s", "double", False),
        ("restart_count", "int32", False),
        ("node", "string", False),
    ],
}

# method -> (request, reply)
METHODS: dict[str, tuple[str, str]] = {
    "Acquire": ("WorkerRequest", "AcquireReply"),
    "Commit": ("CommitRequest", "CommitReply"),
    "Heartbeat": ("WorkerRequest", "HeartbeatReply"),
    "FailWorker": ("WorkerRequest", "Ack"),
    "PlanStep": ("PlanRequest", "PlanReply"),
    "CommitStep": ("CommitStepRequest", "CommitReply"),
    "Snapshot": ("Empty", "JsonBlob"),
    "Restore": ("JsonBlob", "Ack"),
    "ReportStats": ("StatsRequest", "Ack"),
    "Status": ("Empty", "JsonBlob"),
    "Shutdown": ("Empty", "Ack"),
}


def _build() -> dict[str, type]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="antdt/master.proto", package=PACKAGE, syntax="proto3"
    )
    for name, fields in _SPEC.items():
        m = fdp.message_type.add(name=name)
        for i, (fname, ftype, repeated) in enumerate(fields, start=1):
            m.field.add(
                name=fname,
                number=i,
                type=_TYPES[ftype],
                label=_T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL,
            )
    svc = fdp.service.add(name="Master")
    for meth, (req, rep) in METHODS.items():
        svc.method.add(name=meth, input_type=f".{PACKAGE}.{req}", output_type=f".{PACKAGE}.{rep}")
    pool = descriptor_pool.DescriptorPool()
    fd = pool.Add(fdp)
    fd = pool.FindFileByName(fdp.name)
    return {name: message_factory.GetMessageClass(fd.message_types_by_name[name]) for name in _SPEC}


MESSAGES = _build()


def msg(name: str, **fields):
    """Build a message by name: ``msg("CommitRequest", shard_id=3, ...)``."""
    return MESSAGES[name](**fields)
