"""A resolver: a live list of a service's healthy instances, fed by the Registry's Watch.

:meth:`Resolver.start` (or ``async with``) opens a Watch from revision 0 --
the current instances, a SYNCED marker, then live events -- and returns once
synced. A background task applies events as they come; when the stream
breaks it opens a new Watch from 0 and replaces the list with that snapshot
(no stale instance survives a reconnect). :meth:`pick` goes round robin,
:meth:`pick_random` at random, both over the instances that are passing
their health checks (TTL-only instances pass while their lease lives) and
carry every requested tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence

import grpc

from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb
from discovery.client.channel import RegistryClient, RegistryError

log = logging.getLogger(__name__)


class NoInstancesError(LookupError):
    """The service has no healthy instance (with the requested tags) right now."""


class Resolver:
    """The healthy instances of ``service`` at the Registry ``registry`` (see the module docstring).

    Invariant: ``_instances`` is exactly the state the last Watch described
    up to ``revision`` (every instance, healthy or not; picking filters).
    """

    def __init__(self, registry: str, token: str, service: str, *, tags: Sequence[str] = (),
                 healthy_only: bool = True, rng: random.Random | None = None) -> None:
        self.registry = registry
        self.token = token
        self.service = service
        self.tags = frozenset(tags)
        self.healthy_only = healthy_only
        self.revision = 0
        self.resyncs = 0
        self._rng = rng or random.Random()
        self._instances: dict[str, pb.Instance] = {}
        self._next = 0
        self._client: RegistryClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._changed = asyncio.Condition()

    async def start(self, timeout: float = 10.0) -> None:
        """Start watching; returns once the first snapshot is in (raises RegistryError if refused)."""
        self._client = RegistryClient(self.registry, self.token)
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._follow(first))
        await asyncio.wait_for(asyncio.shield(first), timeout)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> Resolver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reading ------------------------------------------------------------------------------

    def _eligible(self, instance: pb.Instance) -> bool:
        if self.healthy_only and instance.health != pb.HEALTH_PASSING:
            return False
        return self.tags.issubset(instance.tags)

    def instances(self) -> list[pb.Instance]:
        """The eligible instances now, sorted by instance id."""
        return [self._instances[k] for k in sorted(self._instances)
                if self._eligible(self._instances[k])]

    def pick(self) -> pb.Instance:
        """The next eligible instance, round robin (raises :class:`NoInstancesError`)."""
        candidates = self.instances()
        if not candidates:
            raise NoInstancesError(f"no healthy instance of {self.service!r}")
        instance = candidates[self._next % len(candidates)]
        self._next += 1
        return instance

    def pick_random(self) -> pb.Instance:
        """An eligible instance chosen at random (raises :class:`NoInstancesError`)."""
        candidates = self.instances()
        if not candidates:
            raise NoInstancesError(f"no healthy instance of {self.service!r}")
        return self._rng.choice(candidates)

    async def wait_for(self, predicate: Callable[[Resolver], object],
                       timeout: float | None = None) -> None:
        """Wait until ``predicate(resolver)`` is true (it is called after every change)."""

        async def waiting() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(predicate(self)))

        await asyncio.wait_for(waiting(), timeout)

    # -- following the Watch -------------------------------------------------------------------

    async def _follow(self, first: asyncio.Future[None]) -> None:
        assert self._client is not None
        delay = 0.1
        while True:
            staged: dict[str, pb.Instance] = {}
            synced = False
            try:
                async for event in self._client.watch(self.service, start_revision=0):
                    if not synced:
                        if event.type == pb.WatchEvent.SYNCED:
                            synced = True
                            delay = 0.1
                            await self._replace(staged, event.revision)
                            if not first.done():
                                first.set_result(None)
                        elif event.type == pb.WatchEvent.UP:
                            staged[event.instance.instance_id] = event.instance
                        continue
                    await self._apply(event)
                raise RegistryError(grpc.StatusCode.UNAVAILABLE, "the watch ended")
            except RegistryError as exc:
                if not first.done() and not _retryable(exc):
                    first.set_exception(exc)
                    return
                log.info("resolver for %s: watch broke (%s); resyncing", self.service, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            self.resyncs += 1

    async def _replace(self, instances: dict[str, pb.Instance], revision: int) -> None:
        async with self._changed:
            self._instances = instances
            self.revision = revision
            self._changed.notify_all()

    async def _apply(self, event: pb.WatchEvent) -> None:
        async with self._changed:
            key = event.instance.instance_id
            if event.type in (pb.WatchEvent.UP, pb.WatchEvent.CHANGED):
                self._instances[key] = event.instance
            elif event.type == pb.WatchEvent.DOWN:
                self._instances.pop(key, None)
            self.revision = max(self.revision, int(event.revision))
            self._changed.notify_all()


_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
              grpc.StatusCode.OUT_OF_RANGE}


def _retryable(exc: RegistryError) -> bool:
    return exc.code in _RETRYABLE
