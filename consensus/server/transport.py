"""The peer transport: Raft messages between members over asyncio TCP.

Outbound, one :class:`PeerLink` per peer keeps one connection open and
sends messages **batched** (everything queued during one event-loop
iteration goes out in a single write) and **pipelined** (nothing waits for a
reply; Raft's own responses flow back on the peer's connection to us).
Each link's queue is capped in messages and bytes; a message that does not
fit is dropped and the peer reported unreachable to Raft, which then probes
instead of streaming. A broken connection is re-dialled with exponential
backoff; while a link is backing off, messages to it are dropped at once
(Raft resends whatever matters).

Snapshots do not travel on the message connection (they would hold up
heartbeats): each one gets its own connection and is streamed in chunks,
and the outcome is reported with ``report_snapshot``.

Inbound, a server on every ``--listen-peer-urls`` address accepts both kinds
of connection and hands each decoded message to the member.

Wire protocol (little-endian):

* handshake, dialler -> listener: ``magic "FSPR" | version u8 | kind u8 |
  cluster id u64 | sender id u64 | recipient id u64``; the listener answers
  ``status u8 | its cluster id u64 | its member id u64`` and closes the
  connection unless the status is ``HANDSHAKE_OK``;
* kind ``STREAM_MESSAGES``: then frames ``length u32 | encoded message`` (see
  :mod:`consensus.server.peer_codec`), dialler to listener only;
* kind ``STREAM_SNAPSHOT``: one frame with the SNAP message whose snapshot
  data is detached, then the data as frames ``length u32 | chunk``, then the
  listener answers one byte (``SNAPSHOT_ACK_OK`` once the member has the message);
* kind ``STREAM_PROBE`` (recipient id 0, cluster id 0): only the handshake, to
  learn a running cluster's id (a member joining with
  ``--initial-cluster-state existing``).

All sockets are created by :class:`PeerSockets`: plain TCP for ``http://``
peer URLs, TLS for ``https://`` ones (see :mod:`consensus.server.tls`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from consensus.raft.types import Message, MessageType
from consensus.server.cluster import HostPort, parse_url
from consensus.server.peer_codec import (
    PeerCodecError,
    attach_snapshot_data,
    decode_message,
    decode_message_with_detached_size,
    encode_message,
)
from consensus.server.tls import TlsFiles

log = logging.getLogger(__name__)

MAGIC = b"FSPR"
PROTOCOL_VERSION = 1

STREAM_MESSAGES = 1
STREAM_SNAPSHOT = 2
STREAM_PROBE = 3

HANDSHAKE_OK = 0
HANDSHAKE_CLUSTER_MISMATCH = 1
HANDSHAKE_WRONG_MEMBER = 2
HANDSHAKE_BAD_REQUEST = 3

SNAPSHOT_ACK_OK = 0
SNAPSHOT_ACK_FAILED = 1

_HANDSHAKE = struct.Struct("<4sBBQQQ")
_HANDSHAKE_REPLY = struct.Struct("<BQQ")
_FRAME_LENGTH = struct.Struct("<I")

MAX_FRAME_BYTES = 256 << 20
"""No frame is larger; a bigger length field means a broken or hostile peer."""

MessageHandler = Callable[[Message], None]
"""Receives every decoded inbound message, on the event loop."""


class TransportReporter(Protocol):
    """What the transport tells Raft about delivery (implemented by the member)."""

    def report_unreachable(self, member_id: int) -> None: ...

    def report_snapshot(self, member_id: int, *, failed: bool) -> None: ...


class HandshakeRefused(ConnectionError):
    """The listener refused our handshake (another cluster, or another member at that URL)."""


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Bounds and timings of the transport (defaults suit a LAN; tests may shrink them)."""

    max_queued_messages: int = 4096
    """Messages waiting for one peer beyond which new ones are dropped."""
    max_queued_bytes: int = 64 << 20
    """Encoded bytes waiting for one peer beyond which new messages are dropped."""
    snapshot_chunk_bytes: int = 1 << 20
    dial_timeout: float = 1.0
    write_timeout: float = 5.0
    """A write that cannot drain this long means the peer is stuck: reconnect."""
    snapshot_timeout: float = 60.0
    """Longest time for one snapshot to be streamed and acknowledged."""
    backoff_initial: float = 0.05
    backoff_max: float = 1.0


class PeerSockets:
    """The one factory of peer sockets, dialling and listening: plain TCP for ``http://``
    peer URLs, TLS for ``https://`` ones (``tls``: ``--peer-cert-file`` and friends).

    Dialling an ``https`` peer verifies its certificate against
    ``--peer-trusted-ca-file`` and the URL's host, and presents our own
    certificate; listening on ``https`` requires the dialler's certificate when
    ``--peer-client-cert-auth`` is on.
    """

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.tls = tls if tls is not None else TlsFiles()
        self._client_ctx: ssl.SSLContext | None = None
        self._server_ctx: ssl.SSLContext | None = None

    def _client_context(self, addr: HostPort) -> ssl.SSLContext:
        if self._client_ctx is None:
            if not self.tls.trusted_ca_file and not self.tls.enabled:
                raise ConnectionError(
                    f"peer URL {addr} is https: --peer-trusted-ca-file (and a peer cert) is needed"
                )
            self._client_ctx = self.tls.client_context()
        return self._client_ctx

    async def open_connection(
        self, addr: HostPort, timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if addr.scheme == "https":
            ctx = self._client_context(addr)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(addr.host, addr.port, ssl=ctx, server_hostname=addr.host),
                timeout,
            )
        else:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(addr.host, addr.port), timeout
            )
        _set_nodelay(writer)
        return reader, writer

    async def start_server(
        self,
        addr: HostPort,
        on_connection: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> asyncio.Server:
        ctx: ssl.SSLContext | None = None
        if addr.scheme == "https":
            if not self.tls.enabled:
                raise ValueError(f"peer URL {addr} is https: --peer-cert-file/--peer-key-file needed")
            if self._server_ctx is None:
                self._server_ctx = self.tls.server_context()
            ctx = self._server_ctx

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            _set_nodelay(writer)
            await on_connection(reader, writer)

        return await asyncio.start_server(
            accepted, addr.host, addr.port, reuse_address=True, ssl=ctx
        )


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FrameReader:
    """A reader of ``length u32 | payload`` frames that pulls the stream in large reads."""

    def __init__(self, reader: asyncio.StreamReader, read_size: int = 256 << 10) -> None:
        self._reader = reader
        self._buf = bytearray()
        self._pos = 0
        self._read_size = read_size

    async def read_frames(self) -> list[bytes]:
        """At least one complete frame; raises IncompleteReadError at a clean or torn EOF."""
        while True:
            frames = self._take_frames()
            if frames:
                return frames
            chunk = await self._reader.read(self._read_size)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(self._buf[self._pos :]), None)
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += chunk

    async def read_frame(self) -> bytes:
        """Exactly one frame (frames read ahead are kept for the next call)."""
        while True:
            frame = self._take_one()
            if frame is not None:
                return frame
            chunk = await self._reader.read(self._read_size)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(self._buf[self._pos :]), None)
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += chunk

    def _take_one(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 4:
            return None
        (length,) = _FRAME_LENGTH.unpack_from(buf, pos)
        if length > MAX_FRAME_BYTES:
            raise PeerCodecError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
        end = pos + 4 + length
        if end > len(buf):
            return None
        self._pos = end
        return bytes(buf[pos + 4 : end])

    def _take_frames(self) -> list[bytes]:
        frames: list[bytes] = []
        while True:
            frame = self._take_one()
            if frame is None:
                return frames
            frames.append(frame)


def frame(payload: bytes | memoryview) -> bytes:
    """``payload`` prefixed with its length."""
    return _FRAME_LENGTH.pack(len(payload)) + payload


def _write(writer: asyncio.StreamWriter, data: bytes | memoryview) -> None:
    """Write ``data`` on an outbound peer connection; ConnectionResetError if it is closed.

    A connection can be reset (a partition healing, a peer restarting) after
    the writing task last looked at it: the reset is processed by the loop,
    but the EOF watcher that would tell the writer has not run yet. asyncio's
    own loop then drops the write and the next drain raises
    ConnectionResetError; uvloop, which members run on, raises RuntimeError
    ("the handler is closed") from ``write`` itself, which the callers did not
    expect -- a link's task died of it silently and never re-dialled
    (robustness seed 9110). Invariant: a write on a closed connection raises
    ConnectionResetError (an OSError) on every loop, the failure every caller
    handles by reconnecting and reporting the peer unreachable.
    """
    if writer.transport.is_closing():  # uvloop: a closed handle is always closing
        raise ConnectionResetError("the peer connection was reset")
    writer.write(data)


async def _dial(
    sockets: PeerSockets,
    addr: HostPort,
    limits: TransportLimits,
    kind: int,
    cluster_id: int,
    sender: int,
    recipient: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, int]:
    """Connect and handshake; returns the streams and the listener's (cluster id, member id)."""
    reader, writer = await sockets.open_connection(addr, limits.dial_timeout)
    try:
        _write(writer, _HANDSHAKE.pack(MAGIC, PROTOCOL_VERSION, kind, cluster_id, sender, recipient))
        reply = await asyncio.wait_for(
            reader.readexactly(_HANDSHAKE_REPLY.size), limits.dial_timeout
        )
        status, their_cluster, their_id = _HANDSHAKE_REPLY.unpack(reply)
        if status != HANDSHAKE_OK:
            reason = {
                HANDSHAKE_CLUSTER_MISMATCH: f"cluster id mismatch (theirs {their_cluster:x}, ours {cluster_id:x})",
                HANDSHAKE_WRONG_MEMBER: f"member {their_id:x} listens there, not {recipient:x}",
            }.get(status, f"status {status}")
            raise HandshakeRefused(f"{addr} refused the handshake: {reason}")
    except BaseException:
        writer.close()
        raise
    return reader, writer, their_cluster, their_id


async def fetch_cluster_id(
    peer_urls: Iterable[str], limits: TransportLimits | None = None, sockets: PeerSockets | None = None
) -> tuple[int, int] | None:
    """Ask running members for the cluster id; ``(cluster id, member id)`` of the first that answers."""
    limits = limits or TransportLimits()
    sockets = sockets or PeerSockets()
    for url in peer_urls:
        try:
            _, writer, cid, mid = await _dial(
                sockets, parse_url(url), limits, STREAM_PROBE, 0, 0, 0
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("probe of %s failed: %s", url, exc)
            continue
        writer.close()
        return cid, mid
    return None


class PeerLink:
    """The outbound side of one peer: a bounded queue, one connection, and snapshot senders.

    Invariants: ``queued_bytes`` is the sum of the lengths of the frames in
    ``_queue``; ``len(_queue) <= limits.max_queued_messages`` and
    ``queued_bytes <= limits.max_queued_bytes``; at most one snapshot is
    streamed to the peer at a time.
    """

    def __init__(
        self,
        transport: PeerTransport,
        member_id: int,
        urls: list[HostPort],
    ) -> None:
        self._transport = transport
        self.member_id = member_id
        self.urls = urls
        self._queue: collections.deque[bytes] = collections.deque()
        self.queued_bytes = 0
        self._wake = asyncio.Event()
        self.connected = False
        self.backing_off = False
        self._stop = asyncio.Event()
        self._snapshot_task: asyncio.Task[None] | None = None
        self._url_turn = 0
        self.dropped_messages = 0
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"peer-link-{member_id:x}"
        )

    # -- sending ----------------------------------------------------------------------
    def send(self, m: Message) -> None:
        if m.type == MessageType.SNAP:
            self._send_snapshot(m)
            return
        if self.backing_off or self._stop.is_set():
            self._drop(m, "peer unreachable")
            return
        data = frame(encode_message(m))
        limits = self._transport.limits
        if (
            len(self._queue) >= limits.max_queued_messages
            or self.queued_bytes + len(data) > limits.max_queued_bytes
        ):
            self._drop(m, "send queue full")
            return
        self._queue.append(data)
        self.queued_bytes += len(data)
        self._wake.set()

    def _drop(self, m: Message, why: str) -> None:
        self.dropped_messages += 1
        if self.dropped_messages % 1000 == 1:
            log.warning(
                "dropping %s to %x: %s (%d dropped so far)",
                m.type.name, self.member_id, why, self.dropped_messages,
            )
        self._transport.reporter.report_unreachable(self.member_id)

    def _drop_queue(self) -> None:
        if self._queue:
            self._queue.clear()
            self.queued_bytes = 0
            self._transport.reporter.report_unreachable(self.member_id)

    @property
    def idle(self) -> bool:
        """Nothing waits to be written and no snapshot is being sent."""
        return not self._queue and (self._snapshot_task is None or self._snapshot_task.done())

    # -- the connection loop ---------------------------------------------------------------
    async def _run(self) -> None:
        # Invariant: this task ends only when the link is stopped. However a
        # connection ends, the queue is dropped, Raft hears the peer is
        # unreachable, and the peer is dialled again; a link that died instead
        # would silently swallow every later message to its peer.
        limits = self._transport.limits
        backoff = limits.backoff_initial
        while not self._stop.is_set():
            try:
                reader, writer = await self._connect(STREAM_MESSAGES)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                if self._stop.is_set():
                    return
                if not self.backing_off:
                    log.info("peer %x unreachable: %s", self.member_id, exc)
                self.backing_off = True
                self._drop_queue()
                self._transport.reporter.report_unreachable(self.member_id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, limits.backoff_max)
                # Queue again during the next attempt, so a fresh connection starts with work.
                self.backing_off = False
                continue
            backoff = limits.backoff_initial
            self.backing_off = False
            self.connected = True
            log.info("connected to peer %x", self.member_id)
            try:
                await self._write_loop(reader, writer)
            except (TimeoutError, OSError) as exc:
                if not self._stop.is_set():
                    log.info("connection to peer %x lost: %s", self.member_id, exc)
            except Exception:  # not foreseen: still a lost connection, never a dead link
                if self._stop.is_set():
                    return
                log.warning("connection to peer %x failed", self.member_id, exc_info=True)
            finally:
                self.connected = False
                writer.close()
            if not self._stop.is_set():
                self._drop_queue()
                self._transport.reporter.report_unreachable(self.member_id)

    async def _connect(self, kind: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not self.urls:
            raise ConnectionError(f"no peer URL known for member {self.member_id:x}")
        addr = self.urls[self._url_turn % len(self.urls)]
        self._url_turn += 1
        t = self._transport
        reader, writer, _, _ = await _dial(
            t.sockets, addr, t.limits, kind, t.cluster_id, t.member_id, self.member_id
        )
        return reader, writer

    async def _write_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        closed = asyncio.Event()
        # The listener never writes on a message stream: any read completing means EOF or error.
        watcher = asyncio.get_running_loop().create_task(self._watch_eof(reader, closed))
        try:
            while not self._stop.is_set():
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                if closed.is_set():
                    raise ConnectionResetError("peer closed the connection")
                if not self._queue:
                    continue
                batch = b"".join(self._queue)
                self._queue.clear()
                self.queued_bytes = 0
                _write(writer, batch)
                async with asyncio.timeout(self._transport.limits.write_timeout):
                    await writer.drain()
        finally:
            watcher.cancel()

    async def _watch_eof(self, reader: asyncio.StreamReader, closed: asyncio.Event) -> None:
        with contextlib.suppress(OSError):
            await reader.read(1)
        closed.set()
        self._wake.set()

    # -- snapshots ------------------------------------------------------------------------
    def _send_snapshot(self, m: Message) -> None:
        reporter = self._transport.reporter
        if self._stop.is_set() or (self._snapshot_task is not None and not self._snapshot_task.done()):
            log.warning("snapshot to %x dropped: another one is in flight", self.member_id)
            reporter.report_snapshot(self.member_id, failed=True)
            return
        self._snapshot_task = asyncio.get_running_loop().create_task(
            self._stream_snapshot(m), name=f"snapshot-to-{self.member_id:x}"
        )

    async def _stream_snapshot(self, m: Message) -> None:
        reporter = self._transport.reporter
        limits = self._transport.limits
        assert m.snapshot is not None
        data = memoryview(m.snapshot.data)
        index = m.snapshot.metadata.index
        try:
            async with asyncio.timeout(limits.snapshot_timeout):
                reader, writer = await self._connect(STREAM_SNAPSHOT)
                try:
                    _write(writer, frame(encode_message(m, with_snapshot_data=False)))
                    step = limits.snapshot_chunk_bytes
                    for start in range(0, len(data), step):
                        _write(writer, frame(data[start : start + step]))
                        await writer.drain()
                    await writer.drain()
                    ack = await reader.readexactly(1)
                finally:
                    writer.close()
            if ack[0] != SNAPSHOT_ACK_OK:
                raise ConnectionError(f"peer refused the snapshot (ack {ack[0]})")
        except Exception as exc:
            # Every snapshot handed to the link is reported, failed or not:
            # until then Raft keeps the peer's progress in SNAPSHOT and sends it
            # nothing else.
            log.warning("sending snapshot at %d to %x failed: %r", index, self.member_id, exc)
            reporter.report_unreachable(self.member_id)
            reporter.report_snapshot(self.member_id, failed=True)
            return
        log.info("sent snapshot at %d (%d bytes) to %x", index, len(data), self.member_id)
        reporter.report_snapshot(self.member_id, failed=False)

    # -- lifecycle ------------------------------------------------------------------------------
    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        tasks = [self._task]
        if self._snapshot_task is not None:
            tasks.append(self._snapshot_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class PeerTransport:
    """All of one member's peer connections: outbound links, inbound listeners.

    ``handler`` receives every inbound message addressed to this member;
    ``reporter`` hears about unreachable peers and snapshot outcomes. Both
    are called on the event loop, never re-entrantly from ``send``'s caller
    stack except for drops (which only step Raft's flow control).
    """

    def __init__(
        self,
        cluster_id: int,
        member_id: int,
        handler: MessageHandler,
        reporter: TransportReporter,
        *,
        limits: TransportLimits | None = None,
        sockets: PeerSockets | None = None,
    ) -> None:
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.handler = handler
        self.reporter = reporter
        self.limits = limits or TransportLimits()
        self.sockets = sockets or PeerSockets()
        self._links: dict[int, PeerLink] = {}
        self._servers: list[asyncio.Server] = []
        self._inbound: set[asyncio.Task[None]] = set()
        self.messages_received = 0

    # -- peers ------------------------------------------------------------------------------
    def set_peer(self, member_id: int, peer_urls: list[str]) -> None:
        """Add a peer, or change its URLs (the connection is re-dialled on the next failure)."""
        if member_id == self.member_id:
            return
        urls = [parse_url(u) for u in peer_urls]
        link = self._links.get(member_id)
        if link is None:
            self._links[member_id] = PeerLink(self, member_id, urls)
        else:
            link.urls = urls

    async def remove_peer(self, member_id: int) -> None:
        link = self._links.pop(member_id, None)
        if link is not None:
            await link.stop()

    def peer_ids(self) -> list[int]:
        return sorted(self._links)

    def is_connected(self, member_id: int) -> bool:
        link = self._links.get(member_id)
        return link is not None and link.connected

    # -- sending ----------------------------------------------------------------------------
    def send(self, messages: Iterable[Message]) -> None:
        """Queue ``messages`` for their recipients; never blocks, never raises for a peer's fault."""
        for m in messages:
            link = self._links.get(m.to)
            if link is None:
                log.debug("no link to %x for %s", m.to, m.type.name)
                if m.type == MessageType.SNAP:
                    self.reporter.report_snapshot(m.to, failed=True)
                self.reporter.report_unreachable(m.to)
                continue
            link.send(m)

    async def flush(self, timeout: float) -> bool:
        """Wait until every link's queue is written (or ``timeout``); whether all were."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if all(link.idle or not link.connected for link in self._links.values()):
                return True
            await asyncio.sleep(0.005)
        return False

    # -- receiving --------------------------------------------------------------------------
    async def listen(self, listen_urls: list[str]) -> None:
        """Start accepting peer connections on every URL."""
        for url in listen_urls:
            server = await self.sockets.start_server(parse_url(url), self._accept)
            self._servers.append(server)
            for sock in server.sockets:
                log.info("listening for peers on %s", sock.getsockname())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inbound.add(task)
        try:
            await self._serve_connection(reader, writer)
        except PeerCodecError as exc:
            log.warning("closed a peer connection that sent a malformed frame: %s", exc)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("peer connection ended: %r", exc)
        except asyncio.CancelledError:
            # Only stop() cancels this task, and it owns the task: ending
            # normally keeps asyncio's stream callback from logging the
            # cancellation as an error.
            pass
        finally:
            self._inbound.discard(task)
            writer.close()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        raw = await asyncio.wait_for(
            reader.readexactly(_HANDSHAKE.size), self.limits.dial_timeout * 5
        )
        magic, version, kind, cluster, sender, recipient = _HANDSHAKE.unpack(raw)
        status = HANDSHAKE_OK
        if magic != MAGIC or version != PROTOCOL_VERSION or kind not in (
            STREAM_MESSAGES, STREAM_SNAPSHOT, STREAM_PROBE
        ):
            status = HANDSHAKE_BAD_REQUEST
        elif kind != STREAM_PROBE and cluster != self.cluster_id:
            status = HANDSHAKE_CLUSTER_MISMATCH
        elif kind != STREAM_PROBE and recipient != self.member_id:
            status = HANDSHAKE_WRONG_MEMBER
        writer.write(_HANDSHAKE_REPLY.pack(status, self.cluster_id, self.member_id))
        await writer.drain()
        if status != HANDSHAKE_OK:
            log.warning(
                "refused peer connection from %x (cluster %x, for %x): status %d",
                sender, cluster, recipient, status,
            )
            return
        if kind == STREAM_MESSAGES:
            await self._receive_messages(FrameReader(reader), sender)
        elif kind == STREAM_SNAPSHOT:
            await self._receive_snapshot(FrameReader(reader), writer, sender)

    async def _receive_messages(self, frames: FrameReader, sender: int) -> None:
        handler = self.handler
        while True:
            for payload in await frames.read_frames():
                m = decode_message(payload)
                if m.from_ != sender:
                    raise PeerCodecError(f"message from {m.from_:x} on {sender:x}'s connection")
                self.messages_received += 1
                handler(m)

    async def _receive_snapshot(
        self, frames: FrameReader, writer: asyncio.StreamWriter, sender: int
    ) -> None:
        m, size = decode_message_with_detached_size(await frames.read_frame())
        if m.type != MessageType.SNAP or size is None or m.from_ != sender:
            raise PeerCodecError("snapshot stream does not start with a detached SNAP message")
        data = bytearray()
        async with asyncio.timeout(self.limits.snapshot_timeout):
            while len(data) < size:
                data += await frames.read_frame()
        if len(data) != size:
            raise PeerCodecError(f"snapshot data is {len(data)} bytes, {size} announced")
        attach_snapshot_data(m, bytes(data))
        assert m.snapshot is not None
        log.info("received snapshot at %d (%d bytes) from %x", m.snapshot.metadata.index, size, sender)
        self.messages_received += 1
        self.handler(m)
        writer.write(bytes([SNAPSHOT_ACK_OK]))
        await writer.drain()

    # -- lifecycle -------------------------------------------------------------------------
    async def stop(self) -> None:
        """Close listeners, inbound connections and links."""
        for server in self._servers:
            server.close()
        for task in list(self._inbound):
            task.cancel()
        await asyncio.gather(*self._inbound, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        links, self._links = list(self._links.values()), {}
        await asyncio.gather(*(link.stop() for link in links), return_exceptions=True)
