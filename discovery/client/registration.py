"""Registering a service instance: register once, keep the lease alive, register again, deregister.

:func:`register` returns a :class:`Registration`, used either as an async
context manager (registered inside the block, deregistered on the way out)
or as a long-running task (``asyncio.create_task(registration.run())``:
cancelling the task deregisters). While registered it renews the lease every
``renew_every`` seconds (default TTL/3) over one KeepAlive stream,
reconnecting with backoff when the stream breaks. When the Registry answers
that the lease is gone -- the process was paused longer than its TTL, or the
Registry was unreachable that long -- it registers again (a new lease, the
same instance id). On SIGTERM every registration of the process deregisters,
then the signal's default action runs (the process ends as it would have).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb
from discovery.client.channel import RegistryClient, RegistryError

log = logging.getLogger(__name__)

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED}


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """An HTTP health check: GET ``url`` (default ``http://<address>:<port>/health``); 2xx passes."""

    url: str = ""
    interval: float = 10.0
    timeout: float = 2.0
    deregister_after: float = 0.0

    def to_pb(self) -> pb.HealthCheck:
        return pb.HealthCheck(http=pb.HttpCheck(url=self.url), interval_seconds=self.interval,
                              timeout_seconds=self.timeout,
                              deregister_critical_after_seconds=self.deregister_after)


@dataclass(frozen=True, slots=True)
class TcpCheck:
    """A TCP health check: connecting to ``target`` (default the instance's address:port) passes."""

    target: str = ""
    interval: float = 10.0
    timeout: float = 2.0
    deregister_after: float = 0.0

    def to_pb(self) -> pb.HealthCheck:
        return pb.HealthCheck(tcp=pb.TcpCheck(target=self.target), interval_seconds=self.interval,
                              timeout_seconds=self.timeout,
                              deregister_critical_after_seconds=self.deregister_after)


@dataclass(frozen=True, slots=True)
class GrpcCheck:
    """A gRPC health check: ``grpc.health.v1.Health/Check(service)`` at ``target`` answers SERVING."""

    target: str = ""
    service: str = ""
    interval: float = 10.0
    timeout: float = 2.0
    deregister_after: float = 0.0

    def to_pb(self) -> pb.HealthCheck:
        return pb.HealthCheck(grpc=pb.GrpcCheck(target=self.target, service=self.service),
                              interval_seconds=self.interval, timeout_seconds=self.timeout,
                              deregister_critical_after_seconds=self.deregister_after)


_active: set[Registration] = set()
_sigterm_installed: set[asyncio.AbstractEventLoop] = set()


def _install_sigterm(loop: asyncio.AbstractEventLoop) -> None:
    if loop in _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(_on_sigterm(loop)))
    except (NotImplementedError, RuntimeError):
        return
    _sigterm_installed.add(loop)


async def _on_sigterm(loop: asyncio.AbstractEventLoop) -> None:
    """Deregister every registration, then let SIGTERM do what it would have done."""
    registrations = [r for r in _active if r.handle_sigterm]
    await asyncio.gather(*(r.close(deregister=True) for r in registrations),
                         return_exceptions=True)
    loop.remove_signal_handler(signal.SIGTERM)
    _sigterm_installed.discard(loop)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


class Registration:
    """One instance registered with the Registry and kept alive (see the module docstring).

    Attributes: ``lease_id`` (the current lease), ``registrations`` (how many
    times it registered: more than 1 after a lost lease), ``renewals``,
    ``revision`` (of the last registration).
    """

    def __init__(
        self, service: str, instance_id: str, address: str, port: int, *, registry: str,
        token: str, ttl: int = 10, tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        check: HttpCheck | TcpCheck | GrpcCheck | None = None,
        renew_every: float | None = None, handle_sigterm: bool = True, timeout: float = 5.0,
    ) -> None:
        self.service = service
        self.instance_id = instance_id
        self.address = address
        self.port = port
        self.registry = registry
        self.token = token
        self.ttl = ttl
        self.tags = tuple(tags)
        self.metadata = dict(metadata or {})
        self.check = check
        self.renew_every = renew_every if renew_every is not None else max(ttl / 3.0, 0.1)
        self.handle_sigterm = handle_sigterm
        self.timeout = timeout
        self.lease_id = 0
        self.revision = 0
        self.registrations = 0
        self.renewals = 0
        self._client: RegistryClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._renewed = asyncio.Event()
        self._unanswered_since: float | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Register (raises :class:`RegistryError` if refused) and start keeping the lease alive."""
        if self._client is None:
            self._client = RegistryClient(self.registry, self.token, timeout=self.timeout)
        await self._register()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._maintain(), name=f"registration {self.instance_id}")
        _active.add(self)
        if self.handle_sigterm:
            _install_sigterm(loop)

    async def run(self) -> None:
        """Register and keep the registration until cancelled; then deregister."""
        try:
            await self.start()
            assert self._task is not None
            await self._task
        finally:
            await asyncio.shield(self.close(deregister=True))

    async def close(self, *, deregister: bool = True) -> None:
        """Stop renewing; deregister (default) so the instance disappears at once."""
        if self._closed:
            return
        self._closed = True
        _active.discard(self)
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            if deregister and self.registrations:
                try:
                    await self._client.deregister(self.service, self.instance_id)
                except RegistryError as exc:
                    log.warning("could not deregister %s/%s: %s", self.service,
                                self.instance_id, exc)
            await self._client.close()

    async def __aenter__(self) -> Registration:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(deregister=True)

    async def wait_renewed(self) -> None:
        """Wait for the next successful renewal."""
        self._renewed.clear()
        await self._renewed.wait()

    # -- internals ---------------------------------------------------------------------------

    async def _register(self) -> None:
        assert self._client is not None
        response = await self._client.register(
            self.service, self.instance_id, self.address, self.port, ttl=self.ttl,
            tags=self.tags, metadata=self.metadata,
            check=self.check.to_pb() if self.check is not None else None)
        self.lease_id = int(response.lease_id)
        self.revision = int(response.revision)
        self.registrations += 1

    async def _register_again(self) -> None:
        """Register after losing the lease, retrying with backoff while the Registry is unreachable."""
        delay = 0.1
        while not self._closed:
            try:
                await self._register()
                log.info("registered %s/%s again (lease %x)", self.service, self.instance_id,
                         self.lease_id)
                return
            except RegistryError as exc:
                if exc.code not in _RETRYABLE:
                    log.error("registering %s/%s again was refused: %s", self.service,
                              self.instance_id, exc)
                log.info("registering again failed (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _maintain(self) -> None:
        """Keep the lease alive over KeepAlive streams until closed."""
        assert self._client is not None
        delay = 0.1
        loop = asyncio.get_running_loop()
        while not self._closed:
            call = self._client.stub.KeepAlive(metadata=self._client.metadata)
            self._unanswered_since = None
            stale = False

            async def send(call: grpc.aio.StreamStreamCall = call) -> None:
                nonlocal stale
                limit = max(self.ttl, 2 * self.renew_every)
                while True:
                    await call.write(pb.KeepAliveRequest(lease_id=self.lease_id))
                    if self._unanswered_since is None:
                        self._unanswered_since = loop.time()
                    await asyncio.sleep(self.renew_every)
                    waited = self._unanswered_since
                    if waited is not None and loop.time() - waited > limit:
                        stale = True  # a stream that stopped answering: open another
                        call.cancel()
                        return

            sender = loop.create_task(send())
            try:
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        break
                    self._unanswered_since = None
                    delay = 0.1
                    if response.lease_id != self.lease_id:
                        continue  # an answer about a lease we replaced meanwhile
                    if response.ttl_seconds <= 0:
                        log.warning("lease of %s/%s is gone; registering again", self.service,
                                    self.instance_id)
                        await self._register_again()
                        continue
                    self.renewals += 1
                    self._renewed.set()
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRYABLE:
                    log.error("keep-alive refused: %s %s", exc.code().name, exc.details())
                else:
                    log.info("keep-alive stream broke (%s); reconnecting", exc.code().name)
            except asyncio.CancelledError:
                if not stale:
                    raise
                log.info("keep-alive stream stopped answering; reconnecting")
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
                call.cancel()
            if self._closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def register(
    service: str, instance_id: str, address: str, port: int, *, registry: str, token: str,
    ttl: int = 10, tags: Sequence[str] = (), metadata: Mapping[str, str] | None = None,
    check: HttpCheck | TcpCheck | GrpcCheck | None = None, renew_every: float | None = None,
    handle_sigterm: bool = True, timeout: float = 5.0,
) -> Registration:
    """A :class:`Registration` of ``service``/``instance_id`` at ``address:port`` (not started yet).

    ``async with register(...) as r:`` or ``asyncio.create_task(register(...).run())``.
    """
    return Registration(service, instance_id, address, port, registry=registry, token=token,
                        ttl=ttl, tags=tags, metadata=metadata, check=check,
                        renew_every=renew_every, handle_sigterm=handle_sigterm, timeout=timeout)
