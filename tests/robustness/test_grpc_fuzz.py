"""Bad input at the gRPC door: the member answers with errors, stays up and loses nothing.

Against one real ``flagstaff node`` (a 1-member cluster), over raw gRPC
channels with identity serializers so any bytes can be sent:

* random bytes (hypothesis) to every unary method of every etcd service,
  and as messages on the Watch and LeaseKeepAlive streams; requests that
  decode and would write are confined to a fuzz key prefix (so a random
  DeleteRange cannot legitimately delete the sentinel data), MemberAdd only
  adds learners, Alarm never activates, AuthEnable is left to its own test;
* oversize requests, keys that are not UTF-8, absurd limits, revisions,
  TTLs and ids;
* thousands of watchers on one stream;
* unauthenticated calls while auth is on.

After each: the process is alive, it serves a linearizable read, the
sentinel keys are exactly as written, and no call was answered with
``UNKNOWN`` (what gRPC says when a handler raised an unexpected exception).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as PbMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.api.gen.etcd.authpb import auth_pb2
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from tests.cluster.harness import Cluster, ProcessRegistry

FUZZ = b"/fuzz/"
SENTINELS = {f"/sentinel/{i}".encode(): f"value-{i}".encode() * (i + 1) for i in range(20)}
SENTINELS[b"/sentinel/\xff\xfe-not-utf8"] = b"\x00\xff binary"
MAX_REQUEST = 64 * 1024

_SKIP_RANDOM = {
    "/etcdserverpb.Auth/AuthEnable",  # the unauthenticated test does this on purpose
    "/etcdserverpb.Maintenance/Snapshot",  # server streaming: exercised separately
}


def _identity(b: bytes) -> bytes:
    return b


def _methods() -> list[tuple[str, Any]]:
    """Every unary method of the etcd services, with its request class."""
    out = []
    for service in pb.DESCRIPTOR.services_by_name.values():
        for m in service.methods:
            if m.client_streaming or m.server_streaming:
                continue
            cls = getattr(pb, m.input_type.name)
            out.append((f"/{service.full_name}/{m.name}", cls))
    return out


UNARY = _methods()


@dataclass
class Door:
    """The member under fire: its endpoint, a raw channel, and what went wrong."""

    cluster: Cluster
    channel: grpc.Channel
    bad_answers: list[str] = field(default_factory=list)
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return self.cluster.nodes[0].endpoint

    def raw(self, method: str, payload: bytes, timeout: float = 10.0,
            metadata: tuple[tuple[str, str], ...] = ()) -> tuple[grpc.StatusCode, bytes | str]:
        """Call ``method`` with raw bytes; ``(code, response bytes or error details)``."""
        call = self.channel.unary_unary(method, request_serializer=_identity, response_deserializer=_identity)
        with self.lock:
            self.calls += 1
        try:
            return grpc.StatusCode.OK, call(payload, timeout=timeout, metadata=metadata)
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
            self.judge(method, code, details, payload)
            return code, details

    def call(self, method: str, request: PbMessage, response_cls: Any, **kw: Any) -> Any:
        code, body = self.raw(method, request.SerializeToString(), **kw)
        if code != grpc.StatusCode.OK:
            raise AssertionError(f"{method} failed: {code} {body!r}")
        assert isinstance(body, bytes)
        return response_cls.FromString(body)

    def judge(self, method: str, code: grpc.StatusCode, details: str, payload: bytes, stream: bool = False) -> None:
        if not stream and details.startswith("grpc: error unmarshalling request"):
            # Undecodable bytes on a unary call: etcd's (Go gRPC's) answer, code and text.
            if code != grpc.StatusCode.INTERNAL:
                self.bad_answers.append(f"{method} <- {payload[:64].hex()}: {code.name} {details[:300]}")
            return
        if stream and ("Error parsing message" in details or "deserializ" in details.lower()):
            # Undecodable bytes on a stream: grpc.aio answers UNKNOWN ("Unexpected <class
            # DecodeError>") where etcd answers INTERNAL; refused before any handler either way.
            return
        unexpected = code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
        if unexpected:
            self.bad_answers.append(f"{method} <- {payload[:64].hex()}: {code.name} {details[:300]}")

    def assert_healthy(self) -> None:
        node = self.cluster.nodes[0]
        assert node.running, f"the member died\n{node.log_tail(60)}"
        for key, value in SENTINELS.items():
            r = self.call("/etcdserverpb.KV/Range", pb.RangeRequest(key=key), pb.RangeResponse)
            assert [kv.value for kv in r.kvs] == [value], f"sentinel {key!r} changed: {r.kvs}"
        assert not self.bad_answers, "unexpected server errors:\n" + "\n".join(self.bad_answers[:20])


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    registry = ProcessRegistry()
    base = tmp_path_factory.mktemp("fuzz")
    cluster = Cluster(base, registry, 1, [f"--max-request-bytes={MAX_REQUEST}"])
    try:
        cluster.start()
        cluster.wait_for_leader(timeout=60)
        channel = grpc.insecure_channel(
            cluster.nodes[0].endpoint,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        d = Door(cluster, channel)
        for key, value in SENTINELS.items():
            d.call("/etcdserverpb.KV/Put", pb.PutRequest(key=key, value=value), pb.PutResponse, timeout=30)
        yield d
        channel.close()
    finally:
        registry.kill_all()
        print(cluster.dump_logs())
        shutil.rmtree(Path(base) / "n1", ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_verdict(door: Door) -> None:
    """Each test is judged on its own calls."""
    door.bad_answers.clear()


# -- confinement of random requests that decode ------------------------------------------------------


def _confine_range(key: bytes, end: bytes) -> tuple[bytes, bytes]:
    return FUZZ + key, (FUZZ + end if end else b"")


def _confine_op(op: pb.RequestOp) -> None:
    which = op.WhichOneof("request")
    if which == "request_put":
        op.request_put.key = FUZZ + op.request_put.key
    elif which == "request_delete_range":
        r = op.request_delete_range
        r.key, r.range_end = _confine_range(r.key, r.range_end)
    elif which == "request_txn":
        for inner in (*op.request_txn.success, *op.request_txn.failure):
            _confine_op(inner)


def confine(method: str, payload: bytes) -> bytes | None:
    """The payload to send (rewritten so writes stay under the fuzz prefix), or None to skip it."""
    name = method.rsplit("/", 1)[1]
    cls = dict(UNARY)[method]
    try:
        req = cls.FromString(payload)
    except (DecodeError, ValueError):
        return payload  # malformed: the server must refuse it cleanly
    if name == "Put":
        req.key = FUZZ + req.key
    elif name == "DeleteRange":
        req.key, req.range_end = _confine_range(req.key, req.range_end)
    elif name == "Txn":
        for op in (*req.success, *req.failure):
            _confine_op(op)
    elif name == "MemberAdd":
        req.isLearner = True  # a voter with an unreachable URL would take the quorum away
    elif name == "Alarm":
        if req.action == pb.AlarmRequest.ACTIVATE:
            return None
    elif name == "UserAdd" or name == "RoleAdd":
        if req.name == "root":
            return None
    else:
        return payload
    return bytes(req.SerializeToString())


# -- the tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [m for m, _ in UNARY if m not in _SKIP_RANDOM])
def test_random_bytes_to_every_unary_method(door: Door, method: str) -> None:
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.binary(max_size=300))
    def fire(payload: bytes) -> None:
        sent = confine(method, payload)
        if sent is not None:
            door.raw(method, sent, timeout=15)

    fire()
    _remove_learners(door)
    door.assert_healthy()


def _remove_learners(door: Door) -> None:
    members = door.call("/etcdserverpb.Cluster/MemberList", pb.MemberListRequest(), pb.MemberListResponse)
    for m in members.members:
        if m.isLearner:
            door.call("/etcdserverpb.Cluster/MemberRemove", pb.MemberRemoveRequest(ID=m.ID), pb.MemberRemoveResponse)


def test_random_messages_on_the_watch_and_keepalive_streams(door: Door) -> None:
    @settings(max_examples=20, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(st.binary(max_size=200), min_size=1, max_size=8),
           st.sampled_from(["/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"]))
    def fire(messages: list[bytes], method: str) -> None:
        stream = door.channel.stream_stream(method, request_serializer=_identity, response_deserializer=_identity)
        call = stream(iter(messages), timeout=3)
        try:
            for _ in call:
                pass
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                door.judge(method, err.code(), err.details() or "", b"".join(messages), stream=True)

    fire()
    door.assert_healthy()


def test_oversize_requests_are_refused(door: Door) -> None:
    too_big = pb.PutRequest(key=FUZZ + b"big", value=b"x" * (MAX_REQUEST + 1)).SerializeToString()
    code, details = door.raw("/etcdserverpb.KV/Put", too_big)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "request is too large" in str(details), (code, details)
    # Past the gRPC receive limit (max request + 512 KiB): refused by the transport itself.
    huge = pb.PutRequest(key=FUZZ + b"huge", value=b"x" * (MAX_REQUEST + 600 * 1024)).SerializeToString()
    code, _ = door.raw("/etcdserverpb.KV/Put", huge)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, code
    many = pb.TxnRequest(success=[
        pb.RequestOp(request_put=pb.PutRequest(key=FUZZ + b"%d" % i, value=b"v")) for i in range(1000)
    ])
    code, details = door.raw("/etcdserverpb.KV/Txn", many.SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "too many operations" in str(details), (code, details)
    door.assert_healthy()


def test_non_utf8_keys_round_trip(door: Door) -> None:
    for key in (FUZZ + b"\xff\xfe\xfd", FUZZ + b"\x00\x01", FUZZ + b"\xc3\x28", FUZZ + b"\xed\xa0\x80"):
        door.call("/etcdserverpb.KV/Put", pb.PutRequest(key=key, value=key[::-1]), pb.PutResponse)
        r = door.call("/etcdserverpb.KV/Range", pb.RangeRequest(key=key), pb.RangeResponse)
        assert [(kv.key, kv.value) for kv in r.kvs] == [(key, key[::-1])]
    listing = door.call("/etcdserverpb.KV/Range", pb.RangeRequest(key=FUZZ, range_end=b"/fuzz0"), pb.RangeResponse)
    assert len(listing.kvs) >= 4
    door.assert_healthy()


ABSURD = [-(2**63), -1, 0, 2**31, 2**62, 2**63 - 1]


@pytest.mark.parametrize("number", ABSURD)
def test_absurd_limits_revisions_ttls_and_ids(door: Door, number: int) -> None:
    u = number & (2**64 - 1)  # the unsigned fields (ids) get the same bits
    requests: list[tuple[str, PbMessage]] = [
        ("/etcdserverpb.KV/Range", pb.RangeRequest(key=b"/sentinel/", range_end=b"/sentinel0", limit=number)),
        ("/etcdserverpb.KV/Range", pb.RangeRequest(key=b"/sentinel/", range_end=b"/sentinel0", revision=number)),
        ("/etcdserverpb.KV/Range", pb.RangeRequest(key=b"/sentinel/", range_end=b"\0", min_mod_revision=number,
                                                   max_mod_revision=number, min_create_revision=number,
                                                   max_create_revision=number)),
        ("/etcdserverpb.KV/Compact", pb.CompactionRequest(revision=number)),
        ("/etcdserverpb.KV/Put", pb.PutRequest(key=FUZZ + b"lease", value=b"v", lease=number)),
        ("/etcdserverpb.Lease/LeaseGrant", pb.LeaseGrantRequest(TTL=number, ID=number)),
        ("/etcdserverpb.Lease/LeaseRevoke", pb.LeaseRevokeRequest(ID=number)),
        ("/etcdserverpb.Lease/LeaseTimeToLive", pb.LeaseTimeToLiveRequest(ID=number, keys=True)),
        ("/etcdserverpb.Maintenance/HashKV", pb.HashKVRequest(revision=number)),
        ("/etcdserverpb.Maintenance/MoveLeader", pb.MoveLeaderRequest(targetID=u)),
        ("/etcdserverpb.Cluster/MemberRemove", pb.MemberRemoveRequest(ID=u)),
        ("/etcdserverpb.Cluster/MemberPromote", pb.MemberPromoteRequest(ID=u)),
        ("/etcdserverpb.Cluster/MemberUpdate", pb.MemberUpdateRequest(ID=u, peerURLs=["http://127.0.0.1:1"])),
        ("/etcdserverpb.KV/Txn", pb.TxnRequest(
            compare=[pb.Compare(key=b"/sentinel/1", target=pb.Compare.MOD, result=pb.Compare.GREATER,
                                mod_revision=number),
                     pb.Compare(key=b"/sentinel/1", target=pb.Compare.VERSION, result=pb.Compare.LESS,
                                version=number)],
            success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"/sentinel/1", revision=number, limit=number))],
        )),
    ]
    for method, req in requests:
        door.raw(method, req.SerializeToString())
    # A watch from an absurd revision is created or refused, never crashes anything.
    stream = door.channel.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=_identity,
                                        response_deserializer=_identity)
    create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=FUZZ, start_revision=number))
    call = stream(iter([create.SerializeToString()]), timeout=2)
    with contextlib.suppress(grpc.RpcError):
        for _ in call:
            pass
    door.assert_healthy()


def test_thousands_of_watchers_on_one_stream(door: Door) -> None:
    n = 2000
    key = FUZZ + b"many-watchers"
    requests: list[bytes] = [
        pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key)).SerializeToString() for _ in range(n)
    ]
    created = threading.Event()
    done = threading.Event()
    sent_put = threading.Event()

    def feed() -> Iterator[bytes]:
        yield from requests
        created.wait(60)
        door.call("/etcdserverpb.KV/Put", pb.PutRequest(key=key, value=b"hello"), pb.PutResponse)
        sent_put.set()
        done.wait(60)

    stream = door.channel.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=_identity,
                                        response_deserializer=_identity)
    call = stream(feed(), timeout=120)
    ids: set[int] = set()
    notified: set[int] = set()
    try:
        for raw in call:
            resp = pb.WatchResponse.FromString(raw)
            if resp.created:
                ids.add(resp.watch_id)
                if len(ids) == n:
                    created.set()
            for e in resp.events:
                assert e.kv.key == key and e.kv.value == b"hello"
                notified.add(resp.watch_id)
            if len(notified) == n:
                break
    finally:
        done.set()
        call.cancel()
    assert len(ids) == n, f"{len(ids)} of {n} watchers created"
    assert notified == ids, f"{len(notified)} of {n} watchers saw the put"
    door.assert_healthy()


def test_unauthenticated_calls_while_auth_is_on(door: Door) -> None:
    def ok(method: str, req: PbMessage, cls: Any, token: str = "") -> Any:
        return door.call(method, req, cls, metadata=(("token", token),) if token else ())

    ok("/etcdserverpb.Auth/UserAdd", pb.AuthUserAddRequest(name="root", password="rootpw"), pb.AuthUserAddResponse)
    ok("/etcdserverpb.Auth/RoleAdd", pb.AuthRoleAddRequest(name="root"), pb.AuthRoleAddResponse)
    ok("/etcdserverpb.Auth/UserGrantRole", pb.AuthUserGrantRoleRequest(user="root", role="root"),
       pb.AuthUserGrantRoleResponse)
    ok("/etcdserverpb.Auth/AuthEnable", pb.AuthEnableRequest(), pb.AuthEnableResponse)
    try:
        denied: list[tuple[str, PbMessage]] = [
            ("/etcdserverpb.KV/Range", pb.RangeRequest(key=b"/sentinel/1")),
            ("/etcdserverpb.KV/Put", pb.PutRequest(key=b"/sentinel/1", value=b"overwritten")),
            ("/etcdserverpb.KV/DeleteRange", pb.DeleteRangeRequest(key=b"/sentinel/", range_end=b"\0")),
            ("/etcdserverpb.KV/Txn", pb.TxnRequest(success=[pb.RequestOp(
                request_delete_range=pb.DeleteRangeRequest(key=b"\0", range_end=b"\0"))])),
            ("/etcdserverpb.KV/Compact", pb.CompactionRequest(revision=1)),
            ("/etcdserverpb.Lease/LeaseGrant", pb.LeaseGrantRequest(TTL=60)),
            ("/etcdserverpb.Auth/UserAdd", pb.AuthUserAddRequest(name="mallory", password="x")),
            ("/etcdserverpb.Auth/AuthDisable", pb.AuthDisableRequest()),
            ("/etcdserverpb.Auth/RoleGrantPermission", pb.AuthRoleGrantPermissionRequest(
                name="root", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"\0"))),
            ("/etcdserverpb.Maintenance/Alarm", pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, alarm=pb.NOSPACE)),
        ]
        for bad_token in ("", "not-a-token", "root.123.456"):
            for method, req in denied:
                code, _ = door.raw(method, req.SerializeToString(),
                                   metadata=(("token", bad_token),) if bad_token else ())
                assert code != grpc.StatusCode.OK, f"{method} with token {bad_token!r} was accepted"
        auth = ok("/etcdserverpb.Auth/Authenticate", pb.AuthenticateRequest(name="root", password="rootpw"),
                  pb.AuthenticateResponse)
        r = ok("/etcdserverpb.KV/Range", pb.RangeRequest(key=b"/sentinel/1"), pb.RangeResponse, auth.token)
        assert r.kvs[0].value == SENTINELS[b"/sentinel/1"]
    finally:
        auth = ok("/etcdserverpb.Auth/Authenticate", pb.AuthenticateRequest(name="root", password="rootpw"),
                  pb.AuthenticateResponse)
        ok("/etcdserverpb.Auth/AuthDisable", pb.AuthDisableRequest(), pb.AuthDisableResponse, auth.token)
    door.assert_healthy()


def test_undecodable_unary_requests_get_etcds_internal_error(door: Door) -> None:
    # Field 1 as a length-delimited value running past the end: no message type decodes it.
    garbage = b"\x0a\x05ab"
    for method, _cls in UNARY:
        call = door.channel.unary_unary(method, request_serializer=_identity, response_deserializer=_identity)
        with pytest.raises(grpc.RpcError) as refused:
            call(garbage, timeout=10)
        if method == "/etcdserverpb.Maintenance/Downgrade":  # a 3.5 RPC: not served, as on etcd 3.4
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            continue
        assert refused.value.code() == grpc.StatusCode.INTERNAL, method
        assert (refused.value.details() or "").startswith("grpc: error unmarshalling request: "), method
    door.assert_healthy()
