"""The client's retry policy, pinned with scripted fake members (in-process gRPC servers).

Each fake serves KV.Range and KV.Put, answering from a script (an error
status or success) and counting the calls it received, so a test can prove
that an ambiguous put reached exactly one member and was never sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client import (
    Client,
    NoLeaderError,
    PermissionDeniedError,
    RequestTimedOutError,
    UnavailableError,
    UncertainResultError,
)
from consensus.client.errors import DeadlineExceededError
from tests.etcd_process import free_port

Answer = tuple[grpc.StatusCode, str] | float | None
"""A scripted answer: an error status, a delay in seconds before succeeding, or None (success)."""


@dataclass
class FakeMember:
    """An in-process gRPC server impersonating one etcd member's KV service."""

    answers: list[Answer]
    port: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    metadata: list[dict[str, str]] = field(default_factory=list)
    server: Any = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _answer(self, method: str, context: Any, response: Any) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        self.metadata.append(dict(context.invocation_metadata()))
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, tuple):
            await context.abort(answer[0], answer[1])
        if isinstance(answer, float):
            await asyncio.sleep(answer)
        return response

    def _handler(self) -> Any:
        def unary(
            method: str, request_type: Any, response: Any
        ) -> Any:
            async def handle(request: Any, context: Any) -> Any:
                return await self._answer(method, context, response)

            return grpc.unary_unary_rpc_method_handler(
                handle,
                request_deserializer=request_type.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )

        return grpc.method_handlers_generic_handler(
            "etcdserverpb.KV",
            {
                "Range": unary("Range", pb.RangeRequest, pb.RangeResponse(count=7)),
                "Put": unary("Put", pb.PutRequest, pb.PutResponse()),
            },
        )

    async def start(self) -> None:
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((self._handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()


@pytest.fixture
async def fakes() -> AsyncIterator[Callable[..., Awaitable[FakeMember]]]:
    started: list[FakeMember] = []

    async def make(*answers: Answer) -> FakeMember:
        member = FakeMember(list(answers))
        await member.start()
        started.append(member)
        return member

    yield make
    for member in started:
        await member.server.stop(None)


TIMED_OUT = (grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out")
NO_LEADER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
DENIED = (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")


async def test_ambiguous_put_is_raised_not_retried(fakes: Any) -> None:
    first, second = await fakes(TIMED_OUT), await fakes()
    async with Client([first.endpoint, second.endpoint]) as client:
        with pytest.raises(UncertainResultError) as info:
            await client.put("k", "v")
        assert isinstance(info.value.cause, RequestTimedOutError)
        assert info.value.message == "etcdserver: request timed out"
        assert first.calls == {"Put": 1} and second.calls == {}
        # The failing member is left behind for the next call.
        assert client.endpoint == second.endpoint


async def test_put_past_its_deadline_is_uncertain(fakes: Any) -> None:
    slow, other = await fakes(1.0), await fakes()
    async with Client([slow.endpoint, other.endpoint]) as client:
        with pytest.raises(UncertainResultError) as info:
            await client.put("k", "v", timeout=0.2)
        assert isinstance(info.value.cause, DeadlineExceededError)
        assert slow.calls == {"Put": 1} and other.calls == {}


async def test_put_is_retried_when_it_provably_never_ran(fakes: Any) -> None:
    leaderless, healthy = await fakes(NO_LEADER), await fakes()
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: connection refused
    async with Client([dead, leaderless.endpoint, healthy.endpoint]) as client:
        await client.put("k", "v")
    assert leaderless.calls == {"Put": 1} and healthy.calls == {"Put": 1}
    # Mutations ask for a leader up front (etcd then refuses at once when it has none).
    assert healthy.metadata[0].get("hasleader") == "true"


async def test_definitive_refusal_is_neither_retried_nor_uncertain(fakes: Any) -> None:
    refusing, other = await fakes(DENIED), await fakes()
    async with Client([refusing.endpoint, other.endpoint]) as client:
        with pytest.raises(PermissionDeniedError):
            await client.put("k", "v")
    assert other.calls == {}


async def test_reads_are_retried_on_another_member(fakes: Any) -> None:
    timing_out, healthy = await fakes(TIMED_OUT), await fakes()
    dead = f"127.0.0.1:{free_port()}"
    async with Client([dead, timing_out.endpoint, healthy.endpoint]) as client:
        response = await client.range("k")
        assert response.count == 7
        assert client.endpoint == healthy.endpoint
        serializable = await client.range("k", serializable=True)
        assert serializable.count == 7
    assert healthy.metadata[0].get("hasleader") == "true"
    assert "hasleader" not in healthy.metadata[1]  # serializable reads need no leader


async def test_reads_give_up_at_the_deadline_with_the_last_error(fakes: Any) -> None:
    a, b = await fakes(*[NO_LEADER] * 100), await fakes(*[NO_LEADER] * 100)
    async with Client([a.endpoint, b.endpoint], timeout=0.5) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(NoLeaderError):
            await client.get("k")
        assert 0.4 < loop.time() - started < 1.5
    assert a.calls["Range"] >= 2 and b.calls["Range"] >= 2  # several rounds, with backoff


async def test_all_members_down_raises_unavailable(fakes: Any) -> None:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    async with Client(dead, timeout=0.3) as client:
        with pytest.raises(UnavailableError) as info:
            await client.put("k", "v")
        assert not isinstance(info.value, UncertainResultError)  # refused: surely not applied
