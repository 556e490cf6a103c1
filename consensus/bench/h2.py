"""A minimal HTTP/2 client connection for gRPC calls: the load generator's lean transport.

Why not grpc.aio: on this project's 2-core machines a grpc.aio unary call
costs the client ~160 us of CPU, so a generator pushing a few thousand
requests per second takes most of a core from the server it measures. This
client does only what a benchmark needs, on the asyncio (uvloop) event loop:

- one TCP connection, HTTP/2 with prior knowledge (``h2c``), many concurrent
  streams; the request header block per method is built once
  (:func:`consensus.bench.headers.request_block`);
- writes of one loop iteration are coalesced into one ``transport.write``;
- responses are split into frames with ``struct``; a unary call's callback
  gets the raw response message; trailers are decoded once per distinct block
  (the client announces a zero-sized HPACK table, so blocks are stateless);
- flow control: the client opens its receive windows wide and refills them;
  sends respect the server's connection and stream windows, queueing data
  that does not fit; PING and SETTINGS are acknowledged.

Not supported (not needed by a benchmark): TLS, server push, priorities,
compression, request headers above one frame.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque

from consensus.bench import headers as hp
from consensus.bench.transport import (
    CANCELLED,
    INTERNAL,
    OK,
    UNAVAILABLE,
    UNKNOWN,
    CloseCallback,
    MessageCallback,
    ReplyCallback,
    parse_endpoint,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA = 0x0
HEADERS = 0x1
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5

MAX_WINDOW = 2**31 - 1
RECV_REFILL = 1 << 24
"""Received bytes after which a window is refilled with one WINDOW_UPDATE."""

_HEAD = struct.Struct(">IBI")  # (length << 8 | type), flags, stream id
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")
_GRPC_PREFIX = struct.Struct(">BI")

_RST_CODES = {0x8: CANCELLED, 0x7: UNAVAILABLE}  # CANCEL, REFUSED_STREAM


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return _HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload


class _Call:
    """One HTTP/2 stream: a unary call or a bidirectional stream."""

    __slots__ = (
        "block",
        "buffer",
        "conn",
        "done",
        "id",
        "message",
        "on_close",
        "on_message",
        "received",
        "send_window",
    )

    def __init__(self, conn: H2Conn, stream_id: int, send_window: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.send_window = send_window
        self.done: ReplyCallback | None = None
        self.on_message: MessageCallback | None = None
        self.on_close: CloseCallback | None = None
        self.buffer = b""
        self.message: bytes | None = None
        self.block = b""
        self.received = 0

    # Stream protocol (for bidirectional calls) ---------------------------------------
    def send(self, body: bytes) -> None:
        """Queue one request message on this stream."""
        self.conn._send_data(self, _GRPC_PREFIX.pack(0, len(body)) + body, False)

    def close(self) -> None:
        """Cancel the stream (RST_STREAM CANCEL); no further callbacks."""
        if self.conn._calls.pop(self.id, None) is not None:
            self.conn._write(_frame(RST_STREAM, 0, self.id, _U32.pack(0x8)))


class H2Conn(asyncio.Protocol):
    """One HTTP/2 connection speaking gRPC (see the module docstring); a :class:`Conn`."""

    def __init__(self, endpoint: str) -> None:
        host, port = parse_endpoint(endpoint)
        self.host, self.port = host, port
        self.endpoint = f"{host}:{port}"
        self._blocks: dict[str, bytes] = {}
        self._calls: dict[int, _Call] = {}
        self._next_id = 1
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._settled: asyncio.Future[None] = self._loop.create_future()
        self._rest = b""
        self._send_window = 65535
        self._peer_initial_window = 65535
        self._peer_max_frame = 16384
        self._received = 0
        self._pending: deque[tuple[_Call, bytes, bool]] = deque()
        self._continuation: tuple[int, int, bytes] | None = None  # (stream, flags, block so far)
        self._status_cache: dict[bytes, tuple[int, str]] = {}
        self._closed_reason: str | None = None
        self._goaway_last = MAX_WINDOW

    @classmethod
    async def open(cls, endpoint: str, timeout: float = 10.0) -> H2Conn:
        """A connection to ``endpoint`` whose HTTP/2 settings exchange is done."""
        conn = cls(endpoint)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: conn, conn.host, conn.port), timeout)
        await asyncio.wait_for(conn._settled, timeout)
        return conn

    # asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        settings = b"".join(
            _SETTING.pack(k, v)
            for k, v in (
                (SETTINGS_HEADER_TABLE_SIZE, 0),
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
            )
        )
        self._write(PREFACE)
        self._write(_frame(SETTINGS, 0, 0, settings))
        self._write(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(MAX_WINDOW - 65535)))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(f"connection lost: {exc or 'closed by peer'}", 0)
        if not self._settled.done():
            self._settled.set_exception(ConnectionError(self._closed_reason))

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
            self._rest = b""
        pos = 0
        end = len(data)
        unpack = _HEAD.unpack_from
        while end - pos >= 9:
            length_kind, flags, stream_id = unpack(data, pos)
            length = length_kind >> 8
            if end - pos - 9 < length:
                break
            kind = length_kind & 0xFF
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            stream_id &= 0x7FFFFFFF
            if kind == DATA:
                self._on_data(stream_id, flags, payload)
            elif kind in (HEADERS, CONTINUATION):
                self._on_headers(kind, stream_id, flags, payload)
            elif kind == WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == PING:
                if not flags & ACK:
                    self._write(_frame(PING, ACK, 0, payload))
            elif kind == SETTINGS:
                if not flags & ACK:
                    self._on_settings(payload)
            elif kind == RST_STREAM:
                (code,) = _U32.unpack_from(payload)
                call = self._calls.pop(stream_id, None)
                if call is not None:
                    status = _RST_CODES.get(code, INTERNAL)
                    self._finish(call, status, f"stream reset by server (HTTP/2 error {code})")
            elif kind == GOAWAY:
                self._on_goaway(payload)
            # PRIORITY, PUSH_PROMISE (disabled) and unknown frames are ignored.
        if pos < end:
            self._rest = data[pos:]
        if self._received >= RECV_REFILL:
            self._write(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._received)))
            self._received = 0

    # frames in --------------------------------------------------------------------------
    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        self._received += len(payload)
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        call = self._calls.get(stream_id)
        if call is None:
            return
        if call.on_message is not None:
            call.received += len(payload)
            if call.received >= RECV_REFILL:
                self._write(_frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(call.received)))
                call.received = 0
        buffer = call.buffer + payload if call.buffer else payload
        pos = 0
        end = len(buffer)
        while end - pos >= 5:
            (size,) = _U32.unpack_from(buffer, pos + 1)
            if end - pos - 5 < size:
                break
            message = buffer[pos + 5 : pos + 5 + size]
            pos += 5 + size
            if call.on_message is not None:
                call.on_message(message)
            elif call.message is None:
                call.message = message
        call.buffer = buffer[pos:] if pos < end else b""
        if flags & END_STREAM:
            # gRPC ends a call with trailers; DATA with END_STREAM has no status.
            self._calls.pop(stream_id, None)
            self._finish(call, OK if call.message is not None else UNKNOWN, "ended without trailers")

    def _on_headers(self, kind: int, stream_id: int, flags: int, payload: bytes) -> None:
        if kind == CONTINUATION:
            if self._continuation is None or self._continuation[0] != stream_id:
                self._fail_all("protocol error: unexpected CONTINUATION", 0)
                return
            _, first_flags, block = self._continuation
            block += payload
            flags = first_flags | (flags & END_HEADERS)
        else:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY:
                payload = payload[5:]
            block = payload
        if not flags & END_HEADERS:
            self._continuation = (stream_id, flags, block)
            return
        self._continuation = None
        if not flags & END_STREAM:
            return  # response headers (":status 200", content-type): nothing to learn
        call = self._calls.pop(stream_id, None)
        if call is None:
            return
        status = self._status_cache.get(block)
        if status is None:
            try:
                decoded = hp.grpc_status(block)
            except (hp.HeaderDecodeError, IndexError, ValueError):
                decoded = None
            if decoded is None:
                # Undecodable trailers: judge a unary call by whether it got its message.
                decoded = (OK, "") if call.message is not None else (UNKNOWN, "undecodable trailers")
            else:
                self._status_cache[block] = decoded
            status = decoded
        self._finish(call, status[0], status[1])

    def _on_settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for call in self._calls.values():
                    call.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self._peer_max_frame = value
        self._write(_frame(SETTINGS, ACK, 0, b""))
        if not self._settled.done():
            self._settled.set_result(None)
        self._drain_pending()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        (increment,) = _U32.unpack_from(payload)
        increment &= 0x7FFFFFFF
        if stream_id == 0:
            self._send_window += increment
        else:
            call = self._calls.get(stream_id)
            if call is None:
                return
            call.send_window += increment
        self._drain_pending()

    def _on_goaway(self, payload: bytes) -> None:
        last, code = struct.unpack_from(">II", payload)
        last &= 0x7FFFFFFF
        self._goaway_last = last
        detail = payload[8:].decode(errors="replace")
        reason = f"server sent GOAWAY (HTTP/2 error {code}{': ' + detail if detail else ''})"
        self._closed_reason = reason
        self._fail_all(reason, last)

    # calls ------------------------------------------------------------------------------
    def _new_call(self) -> _Call:
        stream_id = self._next_id
        self._next_id += 2
        call = _Call(self, stream_id, self._peer_initial_window)
        self._calls[stream_id] = call
        return call

    def _block(self, path: str) -> bytes:
        block = self._blocks.get(path)
        if block is None:
            block = self._blocks[path] = hp.request_block(self.endpoint, path)
        return block

    def unary(self, path: str, body: bytes, done: ReplyCallback) -> None:
        """Start a unary call (see :class:`consensus.bench.transport.Conn`)."""
        if self._closed_reason is not None:
            # Later, never re-entrantly: a client retrying at once must not recurse.
            self._loop.call_soon(done, UNAVAILABLE, b"", self._closed_reason)
            return
        call = self._new_call()
        call.done = done
        block = self._block(path)
        self._write(_frame(HEADERS, END_HEADERS, call.id, block))
        self._send_data(call, _GRPC_PREFIX.pack(0, len(body)) + body, True)

    def stream(self, path: str, on_message: MessageCallback, on_close: CloseCallback) -> _Call:
        """Open a bidirectional call (see :class:`consensus.bench.transport.Conn`)."""
        call = self._new_call()
        call.on_message = on_message
        call.on_close = on_close
        if self._closed_reason is not None:
            self._calls.pop(call.id, None)
            self._loop.call_soon(on_close, UNAVAILABLE, self._closed_reason)
            return call
        self._write(_frame(HEADERS, END_HEADERS, call.id, self._block(path)))
        return call

    def _finish(self, call: _Call, status: int, text: str) -> None:
        if call.done is not None:
            done = call.done
            call.done = None
            message = call.message
            done(status, message if message is not None else b"", "" if status == OK else text)
        elif call.on_close is not None:
            on_close = call.on_close
            call.on_close = None
            on_close(status, "" if status == OK else text)

    def _fail_all(self, reason: str, above: int) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        failed = [c for sid, c in self._calls.items() if sid > above]
        for call in failed:
            del self._calls[call.id]
        self._pending = deque(p for p in self._pending if p[0].id <= above)
        for call in failed:
            self._finish(call, UNAVAILABLE, reason)

    # frames out -------------------------------------------------------------------------
    def _send_data(self, call: _Call, data: bytes, end_stream: bool) -> None:
        size = len(data)
        if (
            not self._pending
            and size <= self._send_window
            and size <= call.send_window
            and size <= self._peer_max_frame
        ):
            self._send_window -= size
            call.send_window -= size
            self._write(_frame(DATA, END_STREAM if end_stream else 0, call.id, data))
            return
        self._pending.append((call, data, end_stream))
        self._drain_pending()

    def _drain_pending(self) -> None:
        while self._pending:
            call, data, end_stream = self._pending[0]
            if call.id not in self._calls:
                self._pending.popleft()
                continue
            room = min(self._send_window, call.send_window, self._peer_max_frame)
            if room <= 0:
                return
            chunk, rest = data[:room], data[room:]
            self._send_window -= len(chunk)
            call.send_window -= len(chunk)
            if rest:
                self._pending[0] = (call, rest, end_stream)
                self._write(_frame(DATA, 0, call.id, chunk))
                continue
            self._pending.popleft()
            self._write(_frame(DATA, END_STREAM if end_stream else 0, call.id, chunk))

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))

    async def close(self) -> None:
        """Send GOAWAY and close; calls still open fail with UNAVAILABLE."""
        if self._transport is not None and not self._transport.is_closing():
            self._write(_frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
            self._flush()
            self._transport.close()
        self._fail_all("connection closed by the client", 0)
