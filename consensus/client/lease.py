"""Lease keep-alive: one shared LeaseKeepAlive stream per client and a per-lease background renewer.

:class:`KeepAliveHub` owns the client's LeaseKeepAlive stream (opened on the
current endpoint when first needed, reopened on the next endpoint after a
failure) and answers :meth:`KeepAliveHub.renew`: send one lease ID, await the
response with that ID. Renewals are idempotent, so a failed one is simply
tried again.

:class:`KeepAlive` is what :meth:`Client.keep_alive
<consensus.client.Client.keep_alive>` returns: a task that renews its lease
every TTL/3 and, when the lease is gone — the server answers TTL 0, or no
renewal succeeded before the last known expiry — marks itself lost, calls
``on_lost`` and wakes :meth:`KeepAlive.wait_lost`. Closing it stops renewing
(the lease then expires on its own; revoke it to end it at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client.errors import (
    DeadlineExceededError,
    EtcdError,
    InvalidAuthTokenError,
    LeaseNotFoundError,
    UnavailableError,
    error_from_rpc,
)
from consensus.client.transport import Endpoint, Method, Transport

log = logging.getLogger(__name__)

LEASE_KEEPALIVE = Method("/etcdserverpb.Lease/LeaseKeepAlive", pb.LeaseKeepAliveResponse)

_RETRY_FIRST = 0.05
_RETRY_MAX = 1.0
_MIN_INTERVAL = 0.05


class _Stream:
    """One open LeaseKeepAlive call: its endpoint, the renewals awaiting an answer, its reader."""

    def __init__(self, call: Any, endpoint: Endpoint, token: str | None) -> None:
        self.call = call
        self.endpoint = endpoint
        self.token = token
        self.waiters: dict[int, list[asyncio.Future[pb.LeaseKeepAliveResponse]]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.error: EtcdError | None = None


class KeepAliveHub:
    """The client's LeaseKeepAlive stream, shared by every renewal."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._stream: _Stream | None = None
        self._open_lock: asyncio.Lock | None = None
        self._write_lock: asyncio.Lock | None = None
        self._handles: set[KeepAlive] = set()

    async def _current(self) -> _Stream:
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
            self._write_lock = asyncio.Lock()
        async with self._open_lock:
            if self._stream is not None and self._stream.error is None:
                return self._stream
            self.transport.check_open()
            endpoint = self.transport.current
            token = await self.transport.token()
            metadata = self.transport.call_metadata(token, leader=True)
            stream = _Stream(endpoint.stream_stream(LEASE_KEEPALIVE)(metadata=metadata), endpoint, token)
            stream.reader = asyncio.get_running_loop().create_task(self._read(stream))
            self._stream = stream
            return stream

    async def _read(self, stream: _Stream) -> None:
        error: EtcdError
        try:
            while True:
                response = await stream.call.read()
                if response is grpc.aio.EOF:
                    raise UnavailableError("lease keepalive stream closed by the server")
                for future in stream.waiters.pop(response.ID, []):
                    if not future.done():
                        future.set_result(response)
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
        except EtcdError as exc:
            error = exc
        except asyncio.CancelledError:
            if stream.error is None:  # the reader itself was cancelled (close)
                raise
            error = stream.error  # renew() gave up on an unanswering stream and cancelled it
        except Exception as exc:
            log.warning("keepalive stream on %s failed unexpectedly", stream.endpoint,
                        exc_info=True)
            error = UnavailableError(f"lease keepalive stream failed: {exc!r}")
        stream.error = error
        stream.call.cancel()
        for futures in stream.waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        stream.waiters.clear()
        if self.transport.closed:
            return
        log.info("keepalive stream on %s ended (%r)", stream.endpoint.target, error)
        if isinstance(error, InvalidAuthTokenError):
            with contextlib.suppress(EtcdError):
                await self.transport.refresh_token(stream.token)
        else:
            self.transport.mark_failed(stream.endpoint)

    async def renew(self, lease_id: int, timeout: float | None) -> pb.LeaseKeepAliveResponse:
        """Renew ``lease_id`` once on the shared stream; the response's TTL is 0 if it is gone."""
        stream = await self._current()
        assert self._write_lock is not None
        future: asyncio.Future[pb.LeaseKeepAliveResponse] = (
            asyncio.get_running_loop().create_future()
        )
        stream.waiters.setdefault(lease_id, []).append(future)
        try:
            async with self._write_lock:
                if stream.error is not None:
                    raise stream.error
                try:
                    await stream.call.write(pb.LeaseKeepAliveRequest(ID=lease_id))
                except grpc.aio.AioRpcError as exc:
                    raise error_from_rpc(exc) from exc
                except Exception as exc:
                    if stream.error is not None:
                        raise stream.error from exc
                    raise UnavailableError(f"lease keepalive write failed: {exc!r}") from exc
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                # A stream that does not answer is as good as dead (a stopped or partitioned
                # member): replace it, on the next endpoint.
                error = DeadlineExceededError(
                    "lease keepalive: no answer before the deadline",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                if stream.error is None:
                    stream.error = error
                    self.transport.mark_failed(stream.endpoint)
                stream.call.cancel()
                raise error from None
        finally:
            waiting = stream.waiters.get(lease_id)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del stream.waiters[lease_id]
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warning

    def keep_alive(
        self,
        lease_id: int,
        on_lost: Callable[[EtcdError], object] | None,
    ) -> KeepAlive:
        handle = KeepAlive(self, lease_id, on_lost)
        self._handles.add(handle)
        return handle

    def forget(self, handle: KeepAlive) -> None:
        self._handles.discard(handle)

    async def close(self) -> None:
        """Stop every keep-alive and the stream."""
        for handle in list(self._handles):
            await handle.close()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.call.cancel()
            if stream.reader is not None:
                stream.reader.cancel()
                with contextlib.suppress(BaseException):
                    await stream.reader


class KeepAlive:
    """A background task keeping one lease alive at TTL/3; reports when the lease is lost.

    Attributes: ``lease_id``; ``ttl`` (seconds, from the last renewal);
    ``expires_at`` (``loop.time()`` by which the lease expires unless renewed
    again, None before the first renewal); ``renewals`` (successful renewals);
    ``lost`` and ``error`` (a :class:`~consensus.client.errors.LeaseNotFoundError`
    once the lease is gone). Use ``async with client.keep_alive(lease):`` or
    :meth:`close` to stop renewing.
    """

    def __init__(
        self,
        hub: KeepAliveHub,
        lease_id: int,
        on_lost: Callable[[EtcdError], object] | None = None,
    ) -> None:
        self.lease_id = lease_id
        self.ttl = 0
        self.expires_at: float | None = None
        self.renewals = 0
        self.lost = False
        self.error: EtcdError | None = None
        self._hub = hub
        self._on_lost = on_lost
        self._lost_event = asyncio.Event()
        self._renewed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def running(self) -> bool:
        return not self._task.done()

    async def wait_lost(self) -> EtcdError:
        """Wait until the lease is lost; return why."""
        await self._lost_event.wait()
        assert self.error is not None
        return self.error

    async def wait_renewed(self, timeout: float | None = None) -> int:
        """Wait for the next successful renewal; return the TTL it granted."""
        self._renewed.clear()
        await asyncio.wait_for(self._renewed.wait(), timeout)
        return self.ttl

    async def close(self) -> None:
        """Stop renewing (idempotent). Does not revoke the lease."""
        self._hub.forget(self)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> KeepAlive:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _lose(self, error: EtcdError) -> None:
        log.warning("lease %x lost: %s", self.lease_id, error.message)
        self.lost = True
        self.error = error
        self._lost_event.set()
        self._hub.forget(self)
        if self._on_lost is not None:
            try:
                self._on_lost(error)
            except Exception:
                log.exception("on_lost callback of lease %x failed", self.lease_id)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        default = self._hub.transport.timeout or 5.0
        # Before the first answer the expiry is unknown: give up after one call timeout.
        give_up_at = loop.time() + default
        retry = _RETRY_FIRST
        while True:
            now = loop.time()
            limit = self.expires_at if self.expires_at is not None else give_up_at
            if now >= limit:
                self._lose(LeaseNotFoundError(
                    f"lease {self.lease_id:x} expired before it could be renewed"
                ))
                return
            sent_at = now
            try:
                response = await self._hub.renew(self.lease_id, min(default, limit - now))
            except EtcdError:
                await asyncio.sleep(min(retry, max(limit - loop.time(), 0)))
                retry = min(retry * 2, _RETRY_MAX)
                continue
            if response.TTL <= 0:
                self._lose(LeaseNotFoundError("etcdserver: requested lease not found",
                                              grpc.StatusCode.NOT_FOUND))
                return
            retry = _RETRY_FIRST
            self.ttl = response.TTL
            self.expires_at = sent_at + response.TTL
            self.renewals += 1
            self._renewed.set()
            await asyncio.sleep(max(response.TTL / 3, _MIN_INTERVAL))
