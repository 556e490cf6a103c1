"""The etcd ``Watch`` service: the bidirectional stream of watch requests and events.

One gRPC ``Watch`` call is one :class:`~consensus.mvcc.watch_hub.WatchStream`
of the member's :class:`~consensus.mvcc.watch_hub.WatchHub` (etcd's
``serverWatchStream`` over its ``watchableStore``). Per call, three asyncio
tasks cooperate on the member's event loop:

- the *receiver* reads requests (create, cancel, progress) and applies them to
  the stream; a client half-close ends it but not the call (as etcd);
- the *sender* (the handler itself) pops the stream's queue and writes each
  message, split into fragments when the watcher asked for it and the
  response is over ``--max-request-bytes`` plus gRPC's overhead; a slow
  client only slows its own sender (the queue is bounded; its watchers fall
  back to history);
- the *progress ticker* runs etcd's periodic progress round for
  ``progress_notify`` watchers (every ``--experimental-watch-progress-notify-interval``,
  10 minutes by default, plus up to 10% jitter).

A call made with the ``hasleader`` metadata (``clientv3.WithRequireLeader``,
which ``etcdctl watch`` uses) is refused with "etcdserver: no leader" when the
member knows no leader, and is closed with that error once the member has
been without one for three election timeouts (etcd's ``monitorLeader``).

One hub-wide *sync* task catches unsynced watchers up from history whenever
the hub asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc as pb_grpc
from consensus.mvcc import MVCCError
from consensus.mvcc.watch_hub import WatchHub, WatchMessage, WatchStream
from consensus.server import authorization, errors
from consensus.server import etcd_codec as codec
from consensus.server.etcd_server import (
    GRPC_OVERHEAD_BYTES,
    NOT_SUPPORTED_FOR_LEARNER,
    EtcdError,
    EtcdServer,
    status_of,
)
from consensus.server.watch_encoding import WatchResponseEncoder

log = logging.getLogger(__name__)

DEFAULT_PROGRESS_NOTIFY_INTERVAL = 600.0
"""etcd's default period of progress notifications for idle ``progress_notify`` watchers (10 min)."""

MIN_PROGRESS_NOTIFY_INTERVAL = 0.1
"""etcd raises a smaller ``--experimental-watch-progress-notify-interval`` to 100 ms."""

NO_LEADER_ROUNDS = 3
"""Election timeouts without a leader before ``hasleader`` streams are closed (etcd's ``maxNoLeaderCnt``)."""

NO_LEADER = "etcdserver: no leader"

SYNC_STEPS_PER_YIELD = 16
"""Catch-up batches (one watcher each, up to ~1 MiB) read before letting the event loop run."""

_End = Callable[[grpc.StatusCode, str], None]
"""Ends a call with a status (from the receiver or the leader watch)."""


def fragments(response: pb.WatchResponse, limit: int) -> list[pb.WatchResponse]:
    """``response`` split as etcd's ``sendFragments`` splits it.

    Unchanged when smaller than ``limit`` bytes or with fewer than two events;
    otherwise consecutive pieces with ``fragment`` set on all but the last,
    each as many events as keep it under ``limit`` (at least one).
    """
    if response.ByteSize() < limit or len(response.events) < 2:
        return [response]
    shell = pb.WatchResponse()
    shell.CopyFrom(response)
    del shell.events[:]
    shell.fragment = True
    base = shell.ByteSize()
    # An event costs its tag (1 byte), its length varint and its bytes.
    sizes = [_field_size(ev.ByteSize()) for ev in response.events]
    out: list[pb.WatchResponse] = []
    i = 0
    while i < len(sizes):
        piece = pb.WatchResponse()
        piece.CopyFrom(shell)
        size = base
        j = i
        while j < len(sizes):
            if j > i and size + sizes[j] >= limit:
                break
            size += sizes[j]
            j += 1
        piece.events.extend(response.events[i:j])
        i = j
        piece.fragment = i < len(sizes)
        out.append(piece)
    return out


def _field_size(n: int) -> int:
    """Bytes a length-delimited field of ``n`` bytes takes: tag, length varint, payload."""
    varint = 1
    rest = n
    while rest >= 0x80:
        rest >>= 7
        varint += 1
    return 1 + varint + n


class WatchService(pb_grpc.WatchServicer):
    """etcdserverpb.Watch on top of one member's watch hub."""

    def __init__(
        self,
        server: EtcdServer,
        *,
        progress_notify_interval: float = DEFAULT_PROGRESS_NOTIFY_INTERVAL,
        election_timeout: float = 1.0,
    ) -> None:
        self.s = server
        self.hub = WatchHub(lambda: server.fsm.kv)
        server.fsm.on_revision(self.hub.notify)
        server.fsm.on_restore(self.hub.restored)
        self.progress_notify_interval = max(progress_notify_interval, MIN_PROGRESS_NOTIFY_INTERVAL)
        self.election_timeout = election_timeout
        self.fragment_limit = server.max_request_bytes + GRPC_OVERHEAD_BYTES
        """Responses of ``fragment`` watchers at or above this size are split (etcd's limit)."""
        self._sync_task: asyncio.Task[None] | None = None
        self._encoder = WatchResponseEncoder(server.header, lambda: server.member.term)
        """Plain event messages as pre-encoded bytes (each event serialized once)."""

    # -- the auth hook ---------------------------------------------------------------------
    async def authorize_watch(
        self, context: grpc.aio.ServicerContext, key: bytes, range_end: bytes
    ) -> None:
        """May this call's user watch ``[key, range_end)``? Raise to refuse (the auth hook).

        Called once per create request, before the watcher exists, with
        ``key`` (an empty key already read as ``b"\\x00"``) and ``range_end``
        in etcd's convention (``b""`` one key, ``b"\\x00"`` from ``key`` on).
        Raise an :class:`EtcdError` or ``MVCCError``: its etcd message becomes
        the cancel reason (etcd 3.4 puts the gRPC error's string there, e.g.
        "rpc error: code = PermissionDenied desc = etcdserver: permission
        denied", which ``authorization.authorize_watch`` produces). The client
        gets a response with ``created``, ``canceled``, watch id -1 and that
        reason, and the stream stays open (etcd's ``isWatchPermitted``).
        """
        # READ on the range; any refusal reads as etcd 3.4's cancel reason (see authorization).
        authorization.authorize_watch(self.s, context, key, range_end)

    # -- the RPC -------------------------------------------------------------------------------
    async def Watch(
        self, request_iterator: AsyncIterator[pb.WatchRequest], context: grpc.aio.ServicerContext
    ) -> None:
        if self.s.member.is_learner:
            await context.abort(grpc.StatusCode.UNAVAILABLE, NOT_SUPPORTED_FOR_LEARNER)
        require_leader = _requires_leader(context)
        if require_leader and self.s.member.leader == 0:
            await context.abort(grpc.StatusCode.UNAVAILABLE, NO_LEADER)
        self._ensure_sync_task()
        stream = self.hub.open_stream()
        ready = asyncio.Event()
        stream.on_ready = ready.set
        ending: list[tuple[grpc.StatusCode, str]] = []

        def end(code: grpc.StatusCode, message: str) -> None:
            ending.append((code, message))
            ready.set()

        tasks = [
            asyncio.create_task(self._receive(request_iterator, context, stream, end)),
            asyncio.create_task(self._progress_ticker(stream)),
        ]
        if require_leader:
            tasks.append(asyncio.create_task(self._watch_leader(end)))
        try:
            while True:
                if ending:  # etcd stops sending at once, queued messages included
                    await context.abort(*ending[0])
                message = stream.pop()
                if message is None:
                    ready.clear()
                    if len(stream) == 0 and not ending:
                        await ready.wait()
                    continue
                for response in self._responses(message):
                    await context.write(response)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            stream.close()

    # -- the three per-call tasks -----------------------------------------------------------
    async def _receive(
        self,
        requests: AsyncIterator[pb.WatchRequest],
        context: grpc.aio.ServicerContext,
        stream: WatchStream,
        end: _End,
    ) -> None:
        """Apply each request to the stream until the client half-closes."""
        try:
            async for request in requests:
                kind = request.WhichOneof("request_union")
                if kind == "create_request":
                    await self._create(context, stream, request.create_request)
                elif kind == "cancel_request":
                    stream.cancel(request.cancel_request.watch_id)
                elif kind == "progress_request":
                    stream.request_progress()
                # Anything else is ignored without closing the stream, as etcd does.
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken request stream ends the call with its error
            log.debug("watch stream receive failed: %r", exc)
            code, message = status_of(exc) or (grpc.StatusCode.UNKNOWN, str(exc))
            end(code, message)

    async def _create(
        self, context: grpc.aio.ServicerContext, stream: WatchStream, c: pb.WatchCreateRequest
    ) -> None:
        key = c.key or b"\x00"
        try:
            await self.authorize_watch(context, key, c.range_end)
        except (EtcdError, MVCCError, errors.MemberError) as exc:
            status = status_of(exc)
            assert status is not None
            stream.reject(status[1])
            return
        stream.watch(
            key,
            c.range_end,
            start_revision=c.start_revision,
            watch_id=c.watch_id,
            no_put=pb.WatchCreateRequest.NOPUT in c.filters,
            no_delete=pb.WatchCreateRequest.NODELETE in c.filters,
            prev_kv=c.prev_kv,
            progress_notify=c.progress_notify,
            fragment=c.fragment,
        )

    async def _progress_ticker(self, stream: WatchStream) -> None:
        # etcd adds up to 10% jitter so that streams opened together do not tick together.
        interval = self.progress_notify_interval * (1 + random.random() / 10)
        while True:
            await asyncio.sleep(interval)
            stream.progress_tick()

    async def _watch_leader(self, end: _End) -> None:
        """Close the call once the member has had no leader for NO_LEADER_ROUNDS election timeouts."""
        rounds = 0
        while True:
            await asyncio.sleep(self.election_timeout)
            rounds = rounds + 1 if self.s.member.leader == 0 else 0
            if rounds >= NO_LEADER_ROUNDS:
                end(grpc.StatusCode.UNAVAILABLE, NO_LEADER)
                return

    # -- the hub's catch-up work -------------------------------------------------------------
    def _ensure_sync_task(self) -> None:
        if self._sync_task is None or self._sync_task.done():
            wanted = asyncio.Event()
            self.hub.on_sync_needed = wanted.set
            self._sync_task = asyncio.create_task(self._sync_loop(wanted))

    async def _sync_loop(self, wanted: asyncio.Event) -> None:
        """Run the hub's catch-up passes whenever it asks, letting the loop run between watchers."""
        while True:
            await wanted.wait()
            wanted.clear()
            try:
                more = True
                while more:
                    more = False
                    for i, progressed in enumerate(self.hub.sync_steps(), 1):
                        more = more or progressed
                        if i % SYNC_STEPS_PER_YIELD == 0:
                            await asyncio.sleep(0)
                    await asyncio.sleep(0)
            except Exception:  # never lose the loop: log, and retry on the next request
                log.exception("watch catch-up failed")

    # -- messages to protobuf -----------------------------------------------------------------
    def _responses(self, m: WatchMessage) -> list[pb.WatchResponse | bytes]:
        encoded = self._encoder.encode(m)
        if encoded is not None:
            return [encoded]
        response = pb.WatchResponse(
            header=self.s.header(m.revision),
            watch_id=m.watch_id,
            created=m.created,
            canceled=m.canceled,
            compact_revision=m.compact_revision,
            cancel_reason=m.cancel_reason,
        )
        if m.events:
            response.events.extend([codec.event_to_pb(e, with_prev_kv=m.prev_kv) for e in m.events])
            if m.fragment:
                return list(fragments(response, self.fragment_limit))
        return [response]


def _requires_leader(context: grpc.aio.ServicerContext) -> bool:
    """Whether the call carries ``hasleader: true`` (``clientv3.WithRequireLeader``)."""
    return any(
        key == "hasleader" and value == "true" for key, value in context.invocation_metadata() or ()
    )


def register(
    server: EtcdServer,
    *,
    progress_notify_interval: float = DEFAULT_PROGRESS_NOTIFY_INTERVAL,
    election_timeout: float = 1.0,
) -> WatchService:
    service = WatchService(
        server, progress_notify_interval=progress_notify_interval, election_timeout=election_timeout
    )
    server.add_service(pb_grpc.add_WatchServicer_to_server, service)
    server.watch_hub = service.hub
    return service
