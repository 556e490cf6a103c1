"""Server-free pieces of ``consensus.client``: error mapping, retry classification, endpoints."""

from __future__ import annotations

import grpc
import pytest

from consensus.client import (
    CompactedError,
    EtcdError,
    NoLeaderError,
    RequestTimedOutError,
    UnavailableError,
    op_delete,
    op_get,
    op_put,
    op_txn,
    txn_writes,
)
from consensus.client.errors import (
    InvalidAuthTokenError,
    NoSpaceError,
    PermissionDeniedError,
    UnimplementedError,
    error_from_status,
    never_sent,
    outcome_unknown,
)
from consensus.client.transport import parse_endpoint

U = grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("code", "message", "cls"),
    [
        (U, "etcdserver: no leader", NoLeaderError),
        (U, "etcdserver: request timed out, possibly due to previous leader failure",
         RequestTimedOutError),
        (U, "etcdserver: request timed out, some future variant", RequestTimedOutError),
        (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted",
         CompactedError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded",
         NoSpaceError),
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", InvalidAuthTokenError),
        (None, "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
         PermissionDeniedError),
        (U, "Socket closed", UnavailableError),
        (grpc.StatusCode.UNIMPLEMENTED, "unknown method", UnimplementedError),
        (grpc.StatusCode.UNKNOWN, "something else", EtcdError),
    ],
)
def test_error_from_status(code: grpc.StatusCode | None, message: str, cls: type) -> None:
    error = error_from_status(code, message)
    assert type(error) is cls
    assert error.message == message.split(" desc = ")[-1]


def test_never_sent_and_outcome_unknown() -> None:
    refused = error_from_status(
        U, "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Failed to connect to remote host: Connection refused",
    )
    cut = error_from_status(U, "Stream removed (Socket closed)")
    no_leader = error_from_status(U, "etcdserver: no leader")
    timed_out = error_from_status(U, "etcdserver: request timed out")
    stopped = error_from_status(U, "etcdserver: server stopped")
    deadline = error_from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    denied = error_from_status(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
    assert never_sent(refused) and never_sent(no_leader)
    assert not any(never_sent(e) for e in (cut, timed_out, stopped, deadline, denied))
    assert all(outcome_unknown(e) for e in (cut, timed_out, stopped, deadline))
    assert not any(outcome_unknown(e) for e in (refused, no_leader, denied))


def test_parse_endpoint() -> None:
    assert parse_endpoint("127.0.0.1:2379") == ("127.0.0.1:2379", False)
    assert parse_endpoint("http://127.0.0.1:2379/") == ("127.0.0.1:2379", False)
    assert parse_endpoint("https://etcd.example:2379") == ("etcd.example:2379", True)
    with pytest.raises(ValueError):
        parse_endpoint("http://")


def test_read_only_txns_are_reads() -> None:
    assert not txn_writes([op_get("a"), op_txn(success=[op_get("b")])])
    assert txn_writes([op_get("a"), op_txn(failure=[op_delete("b")])])
    assert txn_writes([op_put("a", "b")])
