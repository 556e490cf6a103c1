"""The load generator's connection interface, and grpc.aio as its reference implementation.

A :class:`Conn` is one HTTP/2 connection to one endpoint carrying many
concurrent calls. Calls are callback-driven (no task per request): a unary
call reports ``done(status, message_bytes, error_text)``; a stream reports
each received message and, at its end, ``on_close(status, error_text)``.
Request and response messages are raw protobuf bytes: the benchmark
pre-serializes requests and parses responses only when a workload must.

Two implementations:

- ``h2`` (:class:`consensus.bench.h2.H2Conn`, the default): a minimal HTTP/2
  client on the event loop, a fraction of grpc.aio's CPU per call;
- ``grpc`` (:class:`GrpcConn`): grpc.aio channels, the reference to check the
  lean one against (same workloads, same numbers within noise).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

OK = 0
CANCELLED = 1
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

STATUS_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

ReplyCallback = Callable[[int, bytes, str], None]
"""``done(grpc status, the response message (b"" if none), error text)`` of a unary call."""

MessageCallback = Callable[[bytes], None]
CloseCallback = Callable[[int, str], None]


class Stream(Protocol):
    """One open bidirectional call."""

    def send(self, body: bytes) -> None:
        """Queue one request message."""

    def close(self) -> None:
        """Cancel the call (no further callbacks)."""


class Conn(Protocol):
    """One connection to one endpoint, multiplexing any number of calls."""

    endpoint: str

    def unary(self, path: str, body: bytes, done: ReplyCallback) -> None:
        """Start a unary call; ``done`` is called exactly once."""

    def stream(self, path: str, on_message: MessageCallback, on_close: CloseCallback) -> Stream:
        """Open a bidirectional streaming call."""

    async def close(self) -> None:
        """Close the connection (pending calls fail with UNAVAILABLE)."""


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port``, ``http://host:port`` or ``[v6]:port``."""
    text = endpoint.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


async def connect(endpoint: str, kind: str = "h2") -> Conn:
    """A connected :class:`Conn` of ``kind`` (``h2`` or ``grpc``) to ``endpoint``."""
    if kind == "h2":
        from consensus.bench.h2 import H2Conn

        return await H2Conn.open(endpoint)
    if kind == "grpc":
        conn = GrpcConn(endpoint)
        await conn.ready()
        return conn
    raise ValueError(f"unknown transport {kind!r}")


class _GrpcStream:
    """A bidirectional grpc.aio call fed by a queue (grpc.aio allows one write at a time)."""

    def __init__(self, call: Any, on_message: MessageCallback, on_close: CloseCallback) -> None:
        self._call = call
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._on_message = on_message
        self._on_close = on_close
        self._closed = False
        self._tasks = [
            asyncio.get_running_loop().create_task(self._write()),
            asyncio.get_running_loop().create_task(self._read()),
        ]

    async def _write(self) -> None:
        while (body := await self._queue.get()) is not None:
            await self._call.write(body)

    async def _read(self) -> None:
        import grpc

        try:
            async for message in self._call:
                if self._closed:
                    return
                self._on_message(message)
            status, text = OK, ""
        except grpc.aio.AioRpcError as exc:
            status, text = exc.code().value[0], exc.details() or ""
        except asyncio.CancelledError:
            return
        if not self._closed:
            self._closed = True
            self._on_close(status, text)

    def send(self, body: bytes) -> None:
        self._queue.put_nowait(body)

    def close(self) -> None:
        self._closed = True
        self._call.cancel()
        for task in self._tasks:
            task.cancel()


class GrpcConn:
    """A :class:`Conn` on one grpc.aio channel of its own (a TCP connection per channel)."""

    def __init__(self, endpoint: str) -> None:
        import grpc

        host, port = parse_endpoint(endpoint)
        self.endpoint = f"{host}:{port}"
        self._channel: Any = grpc.aio.insecure_channel(
            self.endpoint,
            options=[
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", 2**31 - 1),
            ],
        )
        self._unary: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def ready(self) -> None:
        await self._channel.channel_ready()

    def unary(self, path: str, body: bytes, done: ReplyCallback) -> None:
        method = self._unary.get(path)
        if method is None:
            method = self._unary[path] = self._channel.unary_unary(path)
        task = asyncio.get_running_loop().create_task(self._call(method, body, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _call(method: Any, body: bytes, done: ReplyCallback) -> None:
        import grpc

        try:
            reply: bytes = await method(body)
        except grpc.aio.AioRpcError as exc:
            done(exc.code().value[0], b"", exc.details() or "")
            return
        done(OK, reply, "")

    def stream(self, path: str, on_message: MessageCallback, on_close: CloseCallback) -> Stream:
        call = self._channel.stream_stream(path)()
        return _GrpcStream(call, on_message, on_close)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._channel.close()
