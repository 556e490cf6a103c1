"""Watches multiplexed over one bidirectional Watch stream per client, resumed across failures.

:class:`Watch` is what :meth:`Client.watch <consensus.client.Client.watch>`
returns: an async iterator of ``WatchResponse`` batches (each with one or more
events, or none for a progress notification), closed with :meth:`Watch.close`,
``async with`` or by dropping it. :class:`WatchHub` owns the shared stream:
every watch has its own queue; the hub reads the stream and routes each
response by watch id.

Resumption: the hub remembers, per watch, the revision after the last
complete batch it delivered (or, before any event, the revision the watch was
created at). When the stream fails — the member died, lost its leader
(``hasleader`` makes etcd cut the stream), or the connection broke — the hub
opens a new stream on the next endpoint and re-creates every watch with
``start_revision`` = that revision, so no event is lost and none is delivered
twice. Fragmented responses (``fragment=True``) are reassembled before
delivery, so a batch is always whole. If the resume revision has been
compacted away, the watch's iterator raises
:class:`~consensus.client.errors.CompactedError` with ``compact_revision``.

Queues are unbounded: a consumer that never reads makes memory grow, but a
slow consumer never stalls the other watches on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client.errors import (
    AuthError,
    AuthFailedError,
    ClientClosedError,
    CompactedError,
    DeadlineExceededError,
    EtcdError,
    InvalidAuthTokenError,
    PermissionDeniedError,
    UnavailableError,
    error_from_rpc,
    error_from_status,
)
from consensus.client.transport import Endpoint, Method, Transport

log = logging.getLogger(__name__)

WatchFilter = Literal["noput", "nodelete"]

WATCH = Method("/etcdserverpb.Watch/Watch", pb.WatchResponse)

_FILTERS: dict[str, pb.WatchCreateRequest.FilterType] = {
    "noput": pb.WatchCreateRequest.NOPUT,
    "nodelete": pb.WatchCreateRequest.NODELETE,
}

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0

_End = None  # queue item that ends iteration
_QueueItem = pb.WatchResponse | EtcdError | None

_ids = itertools.count(1)


class _RestartForAuth(Exception):
    """A watch was refused with "permission denied": refresh the token and reopen the stream."""


class _WatchState:
    """The hub's record of one watch: its request, resume point, queue and stream binding."""

    def __init__(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        prev_kv: bool,
        filters: list[pb.WatchCreateRequest.FilterType],
        progress_notify: bool,
        fragment: bool,
        watch_id: int,
    ) -> None:
        self.local_id = next(_ids)
        self.key = key
        self.range_end = range_end
        self.prev_kv = prev_kv
        self.filters = filters
        self.progress_notify = progress_notify
        self.fragment = fragment
        self.requested_id = watch_id
        # The revision to (re)start from; 0 = "from now", replaced at creation.
        self.next_revision = start_revision
        self.queue: asyncio.Queue[_QueueItem] = asyncio.Queue()
        self.created = asyncio.Event()
        self.created_revision = 0
        self.error: EtcdError | None = None
        self.server_id: int | None = None
        self.generation = -1  # stream generation the create request was sent on
        self.fragments: list[pb.WatchResponse] = []
        self.closed = False  # no more delivery; removed from the hub
        self.auth_retried = False  # refused once for permission: token refreshed, retried
        self.resumes: list[int] = []  # start revisions of re-creations on new streams

    def create_request(self) -> pb.WatchRequest:
        return pb.WatchRequest(
            create_request=pb.WatchCreateRequest(
                key=self.key,
                range_end=self.range_end,
                start_revision=self.next_revision,
                progress_notify=self.progress_notify,
                filters=self.filters,
                prev_kv=self.prev_kv,
                watch_id=self.requested_id,
                fragment=self.fragment,
            )
        )

    def deliver(self, item: _QueueItem) -> None:
        if not self.closed:
            self.queue.put_nowait(item)

    def end(self, error: EtcdError | None) -> None:
        """Stop the watch: the iterator raises ``error`` (or just stops) after queued batches."""
        if self.closed:
            return
        self.error = error
        self.queue.put_nowait(error)
        self.closed = True
        self.created.set()  # release wait_created()


class Watch:
    """One open watch: ``async for batch in watch`` yields ``WatchResponse`` s until closed.

    Each yielded response holds the events of one or more whole revisions
    (``batch.events``), or none for a progress notification (then
    ``batch.header.revision`` says how far the watch is known complete).
    Creation confirmations are not yielded; await :meth:`wait_created` (or
    use ``async with``) to know the watch is in place. Iteration raises
    :class:`~consensus.client.errors.CompactedError` when the history it
    needs is compacted, another :class:`~consensus.client.errors.EtcdError`
    when the server refuses the watch (e.g. permission denied), and
    :class:`~consensus.client.errors.ClientClosedError` when the client closes.
    """

    def __init__(self, hub: WatchHub, state: _WatchState) -> None:
        self._hub = hub
        self._state = state
        self._finished = False
        # Dropping the Watch (e.g. `break` out of `async for client.watch(...)`) cancels it.
        self._finalizer = weakref.finalize(self, hub.discard, state)

    @property
    def watch_id(self) -> int | None:
        """The server's id for this watch on the current stream (changes when resumed)."""
        return self._state.server_id

    @property
    def resumes(self) -> list[int]:
        """The start revision of each re-creation after a stream failure (diagnostics)."""
        return list(self._state.resumes)

    @property
    def next_revision(self) -> int:
        """The revision the watch would resume from (0 before it is created)."""
        return self._state.next_revision

    async def wait_created(self, timeout: float | None = None) -> int:
        """Wait until the server confirmed the watch; return the revision it was created at.

        ``timeout`` defaults to the client's; on expiry
        :class:`~consensus.client.errors.DeadlineExceededError` is raised (the
        watch stays registered and may still be created).
        """
        budget = self._hub.transport.timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(self._state.created.wait(), budget)
        except TimeoutError:
            raise DeadlineExceededError(
                "watch not created before the deadline", grpc.StatusCode.DEADLINE_EXCEEDED
            ) from None
        if self._state.error is not None and not self._state.created_revision:
            raise self._state.error
        return self._state.created_revision

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> pb.WatchResponse:
        if self._finished:
            raise StopAsyncIteration
        item = await self._state.queue.get()
        if isinstance(item, pb.WatchResponse):
            return item
        self._finished = True
        self._finalizer()
        if item is None:
            raise StopAsyncIteration
        raise item

    async def close(self) -> None:
        """Cancel the watch (idempotent); iteration stops after already queued batches."""
        self._finalizer()

    aclose = close

    async def __aenter__(self) -> Watch:
        try:
            await self.wait_created()
        except BaseException:
            self._finalizer()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._finalizer()


class WatchHub:
    """The client's single Watch stream: creates, routes, cancels and resumes every watch."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._states: dict[int, _WatchState] = {}
        self._by_server_id: dict[int, _WatchState] = {}
        self._pending: deque[_WatchState] = deque()
        self._call: Any = None
        self._generation = 0
        self._ready = False  # the current stream accepts requests
        self._lock: asyncio.Lock | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._helpers: set[asyncio.Task[None]] = set()
        self._closed = False
        self.endpoint: Endpoint | None = None
        self.streams_opened = 0

    # --- registration --------------------------------------------------------------

    def watch(
        self,
        key: bytes,
        range_end: bytes,
        *,
        start_revision: int,
        prev_kv: bool,
        filters: Iterable[WatchFilter],
        progress_notify: bool,
        fragment: bool,
        watch_id: int,
    ) -> Watch:
        """Register a new watch and start creating it on the stream."""
        self.transport.check_open()
        try:
            filter_types = [_FILTERS[f] for f in filters]
        except KeyError as exc:
            raise ValueError(f"unknown watch filter {exc.args[0]!r}") from None
        state = _WatchState(
            key, range_end, start_revision, prev_kv, filter_types, progress_notify, fragment, watch_id
        )
        self._states[state.local_id] = state
        self._ensure_running()
        if self._ready:
            self._spawn(self._send_create(state, self._generation))
        return Watch(self, state)

    def discard(self, state: _WatchState) -> None:
        """Forget a watch (the user closed or dropped it); cancel it on the server. Sync."""
        if state.local_id not in self._states and state.closed:
            return
        self._states.pop(state.local_id, None)
        server_id = state.server_id
        if server_id is not None and self._by_server_id.get(server_id) is state:
            del self._by_server_id[server_id]
            if self._ready and state.generation == self._generation:
                self._cancel_on_server(server_id, self._generation)
        state.end(None)

    async def request_progress(self) -> bool:
        """Ask the server for a progress notification to every watch; False if no stream is up."""
        if not self._ready:
            return False
        return await self._send(
            pb.WatchRequest(progress_request=pb.WatchProgressRequest()), self._generation
        )

    # --- stream plumbing -----------------------------------------------------------

    def _cancel_on_server(self, watch_id: int, generation: int) -> None:
        request = pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=watch_id))
        self._spawn(self._send(request, generation))

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no running loop (finalizer at interpreter exit)
            coro.close()
            return
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    def _ensure_running(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._wakeup = asyncio.Event()
        assert self._wakeup is not None
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _send(self, request: pb.WatchRequest, generation: int) -> bool:
        assert self._lock is not None
        async with self._lock:
            if not self._ready or generation != self._generation:
                return False
            try:
                await self._call.write(request)
            except Exception:  # the reader sees the stream fail and resumes
                return False
        return True

    async def _send_create(self, state: _WatchState, generation: int) -> None:
        assert self._lock is not None
        async with self._lock:
            if (
                not self._ready
                or generation != self._generation
                or state.closed
                or state.generation == generation
            ):
                return
            state.generation = generation
            self._pending.append(state)
            with contextlib.suppress(Exception):  # the reader sees the stream fail and resumes
                await self._call.write(state.create_request())

    async def _open(self, endpoint: Endpoint) -> tuple[Any, int, str | None]:
        """Open a stream on ``endpoint`` and (re-)create every live watch on it."""
        assert self._lock is not None
        token = await self.transport.token()
        metadata = self.transport.call_metadata(token, leader=True)
        call = endpoint.stream_stream(WATCH)(metadata=metadata)
        async with self._lock:
            self._generation += 1
            generation = self._generation
            self._call = call
            self.endpoint = endpoint
            self.streams_opened += 1
            self._pending.clear()
            self._by_server_id.clear()
            self._ready = True
            for state in list(self._states.values()):
                if state.generation >= 0:  # it was on an earlier stream: a resumption
                    state.resumes.append(state.next_revision)
                state.generation = generation
                state.server_id = None
                state.fragments.clear()
                self._pending.append(state)
                await call.write(state.create_request())
        return call, generation, token

    async def _run(self) -> None:
        backoff = _BACKOFF_FIRST
        assert self._wakeup is not None
        while not self._closed:
            if not self._states:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            endpoint = self.transport.current
            call: Any = None
            token: str | None = None
            error: EtcdError
            try:
                call, generation, token = await self._open(endpoint)
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        raise UnavailableError("watch stream closed by the server")
                    backoff = _BACKOFF_FIRST
                    self._dispatch(response, generation)
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc)
            except _RestartForAuth:
                error = InvalidAuthTokenError("watch refused (permission denied); re-authenticating")
            except EtcdError as exc:
                error = exc
            except Exception as exc:  # e.g. a write on a stream that just ended
                log.warning("watch stream on %s failed unexpectedly", endpoint, exc_info=True)
                error = UnavailableError(f"watch stream failed: {exc!r}")
            finally:
                self._ready = False
                if call is not None:
                    call.cancel()
            if self._stopping():
                return
            log.info("watch stream on %s ended (%r); resuming", endpoint.target, error)
            if isinstance(error, AuthFailedError):  # wrong credentials: retrying cannot help
                for state in list(self._states.values()):
                    state.end(error)
                self._states.clear()
                continue
            if isinstance(error, InvalidAuthTokenError) or (
                self.transport.has_credentials and error.code is grpc.StatusCode.UNAUTHENTICATED
            ):
                with contextlib.suppress(EtcdError):
                    await self.transport.refresh_token(token)
            else:
                self.transport.mark_failed(endpoint)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _stopping(self) -> bool:
        return self._closed or self.transport.closed

    def _dispatch(self, response: pb.WatchResponse, generation: int) -> None:
        if response.created:
            if not self._pending:
                return
            state = self._pending.popleft()
            if response.canceled or response.compact_revision:
                error = _cancel_error(response)
                if (
                    isinstance(error, PermissionDeniedError | AuthError)
                    and self.transport.has_credentials
                    and not state.auth_retried
                    and not state.closed
                ):
                    # etcd checks the stream's token only when a watch is created (and
                    # may say "permission denied" for a stale one): re-authenticate once
                    # and retry.
                    state.auth_retried = True
                    raise _RestartForAuth()
                self._states.pop(state.local_id, None)
                state.end(error)
                return
            if state.closed:  # closed before the server confirmed it: cancel now
                self._cancel_on_server(response.watch_id, generation)
                return
            state.server_id = response.watch_id
            state.auth_retried = False
            self._by_server_id[response.watch_id] = state
            if state.next_revision == 0:
                state.next_revision = response.header.revision + 1
            if not state.created.is_set():
                state.created_revision = response.header.revision
                state.created.set()
            return
        if response.watch_id == -1 and not response.events:
            # A progress notification for the whole stream (WatchProgressRequest).
            for state in self._by_server_id.values():
                state.deliver(response)
            return
        found = self._by_server_id.get(response.watch_id)
        if found is None:
            return
        state = found
        if response.canceled or response.compact_revision:
            del self._by_server_id[response.watch_id]
            self._states.pop(state.local_id, None)
            reasoned = response.compact_revision or response.cancel_reason
            state.end(_cancel_error(response) if reasoned else None)
            return
        if response.fragment:
            state.fragments.append(response)
            return
        if state.fragments:
            response = _merge([*state.fragments, response])
            state.fragments.clear()
        if response.events:
            state.next_revision = response.events[-1].kv.mod_revision + 1
        else:  # this watch's own progress notification: it is synced up to header.revision
            state.next_revision = max(state.next_revision, response.header.revision + 1)
        state.deliver(response)

    async def close(self) -> None:
        """Stop the stream; every open watch's iterator raises ClientClosedError."""
        self._closed = True
        self._ready = False
        for state in list(self._states.values()):
            state.end(ClientClosedError("the client is closed"))
        self._states.clear()
        self._by_server_id.clear()
        tasks = [t for t in [self._task, *self._helpers] if t is not None and not t.done()]
        if self._call is not None:
            self._call.cancel()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


def _cancel_error(response: pb.WatchResponse) -> EtcdError:
    if response.compact_revision:
        return CompactedError(compact_revision=response.compact_revision)
    reason = response.cancel_reason or "watch cancelled by the server"
    return error_from_status(None, reason)


def _merge(parts: list[pb.WatchResponse]) -> pb.WatchResponse:
    merged = pb.WatchResponse()
    merged.CopyFrom(parts[-1])
    del merged.events[:]
    for part in parts:
        merged.events.extend(part.events)
    merged.fragment = False
    return merged
