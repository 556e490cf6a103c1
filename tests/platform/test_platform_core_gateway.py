"""The core gateway on the wire: audit metadata on every mutation, uncertain writes resolved safely.

A scripted in-process gRPC server stands in for the core, so the test sees
exactly the metadata and requests the gateway sends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.mvccpb import kv_pb2
from consensus.client import compare_mod, op_get, op_put
from flags.core import Actor, CoreGateway, decode_metadata_value, encode_metadata_value
from flags.exceptions import CoreUnavailable, CoreUncertain


@dataclass
class FakeCore:
    """A KV service that records each call's metadata and answers from a script."""

    calls: list[tuple[str, pb.TxnRequest, dict[str, str]]] = field(default_factory=list)
    store: dict[bytes, bytes] = field(default_factory=dict)
    write_failures: list[str] = field(default_factory=list)
    apply_before_failing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def txn(self, request: pb.TxnRequest, context: grpc.ServicerContext) -> pb.TxnResponse:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        writes = any(op.WhichOneof("request") == "request_put" for op in request.success)
        with self.lock:
            self.calls.append(("txn-write" if writes else "txn-read", request, metadata))
            if writes and self.write_failures:
                message = self.write_failures.pop(0)
                if self.apply_before_failing:
                    self._apply(request)
                context.abort(grpc.StatusCode.UNAVAILABLE, message)
            responses = []
            for op in request.success:
                if op.WhichOneof("request") == "request_range":
                    key = op.request_range.key
                    kvs = [kv_pb2.KeyValue(key=key, value=self.store[key], mod_revision=7,
                                           create_revision=7, version=1)] \
                        if key in self.store else []
                    responses.append(pb.ResponseOp(response_range=pb.RangeResponse(kvs=kvs)))
            if writes:
                self._apply(request)
            return pb.TxnResponse(succeeded=True, header=pb.ResponseHeader(revision=7),
                                  responses=responses)

    def range(self, request: pb.RangeRequest, context: grpc.ServicerContext) -> pb.RangeResponse:
        with self.lock:
            value = self.store.get(request.key)
        kvs = [kv_pb2.KeyValue(key=request.key, value=value, mod_revision=7)] if value else []
        return pb.RangeResponse(kvs=kvs, header=pb.ResponseHeader(revision=7))

    def _apply(self, request: pb.TxnRequest) -> None:
        for op in request.success:
            if op.WhichOneof("request") == "request_put":
                self.store[op.request_put.key] = op.request_put.value


@pytest.fixture
def fake_core() -> Iterator[tuple[FakeCore, Callable[[], CoreGateway]]]:
    fake = FakeCore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler("etcdserverpb.KV", {
        "Txn": grpc.unary_unary_rpc_method_handler(
            fake.txn, request_deserializer=pb.TxnRequest.FromString,
            response_serializer=pb.TxnResponse.SerializeToString),
        "Range": grpc.unary_unary_rpc_method_handler(
            fake.range, request_deserializer=pb.RangeRequest.FromString,
            response_serializer=pb.RangeResponse.SerializeToString),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    gateways: list[CoreGateway] = []

    def make() -> CoreGateway:
        gateway = CoreGateway([f"127.0.0.1:{port}"], timeout=3.0)
        gateways.append(gateway)
        return gateway

    yield fake, make
    for gateway in gateways:
        gateway.close()
    server.stop(grace=None)


def _put(gateway: CoreGateway, actor: Actor, value: bytes = b"v1") -> pb.TxnResponse:
    return gateway.commit([compare_mod("/flags/p/e/f", "=", 0)], [op_put("/flags/p/e/f", value)],
                          [op_get("/flags/p/e/f")], actor=actor, expect={"/flags/p/e/f": value})


def test_every_mutation_carries_the_actor_and_reason(fake_core: Any) -> None:
    fake, make = fake_core
    gateway = make()
    _put(gateway, Actor("user:ålice", "launch 100% <now>"))
    kind, _, metadata = fake.calls[-1]
    assert kind == "txn-write"
    assert metadata["flagstaff-actor"] == "user:%C3%A5lice"
    assert decode_metadata_value(metadata["flagstaff-actor"]) == "user:ålice"
    assert decode_metadata_value(metadata["flagstaff-reason"]) == "launch 100% <now>"
    _put(gateway, Actor("user:bob"))
    assert "flagstaff-reason" not in fake.calls[-1][2], "no empty reason is sent"


def test_actor_for_a_django_user_and_metadata_encoding() -> None:
    class User:
        def get_username(self) -> str:
            return "carol"

    assert Actor.for_user(User(), "r").metadata() == (
        ("flagstaff-actor", "user:carol"), ("flagstaff-reason", "r"), ("flagstaff-source", "ui"))
    assert dict(Actor.for_user(User(), source="api").metadata())["flagstaff-source"] == "api"
    assert dict(Actor.system("nightly").metadata())["flagstaff-source"] == "job"
    assert "flagstaff-source" not in dict(Actor("user:x").metadata())
    for text in ["plain", "100%", "naïve ☃", "tab\there", "x" * 50]:
        encoded = encode_metadata_value(text)
        assert all(0x20 <= ord(c) < 0x7F for c in encoded)
        assert decode_metadata_value(encoded) == text
    assert len(dict(Actor("user:x", "r" * 5000).metadata())["flagstaff-reason"]) == 1000


def test_an_uncertain_write_that_applied_is_reported_as_applied(fake_core: Any) -> None:
    fake, make = fake_core
    fake.write_failures = ["etcdserver: request timed out"]
    fake.apply_before_failing = True
    response = _put(make(), Actor("user:a"))
    assert response.succeeded
    writes = [c for c in fake.calls if c[0] == "txn-write"]
    assert len(writes) == 1, "an applied write is never resubmitted"


def test_an_uncertain_write_that_did_not_apply_is_resubmitted_once(fake_core: Any) -> None:
    fake, make = fake_core
    fake.write_failures = ["etcdserver: request timed out"]
    response = _put(make(), Actor("user:a"))
    assert response.succeeded
    assert [c[0] for c in fake.calls] == ["txn-write", "txn-read", "txn-write"]
    assert fake.store[b"/flags/p/e/f"] == b"v1"


def test_twice_uncertain_is_a_domain_error(fake_core: Any) -> None:
    fake, make = fake_core
    fake.write_failures = ["etcdserver: request timed out", "etcdserver: request timed out"]
    with pytest.raises(CoreUncertain):
        _put(make(), Actor("user:a"))


def test_an_unreachable_core_is_a_domain_error() -> None:
    gateway = CoreGateway(["127.0.0.1:1"], timeout=0.5)
    try:
        with pytest.raises(CoreUnavailable):
            gateway.get("/projects/x")
    finally:
        gateway.close()


def test_blocking_calls_refuse_to_run_inside_an_event_loop(fake_core: Any) -> None:
    _, make = fake_core
    gateway = make()

    async def misuse() -> None:
        gateway.get("/x")

    with pytest.raises(RuntimeError, match="async"):
        asyncio.run(misuse())

    async def proper() -> Any:
        try:
            return await gateway.aget("/missing")
        finally:
            await gateway.aclose()

    assert asyncio.run(proper()) is None
