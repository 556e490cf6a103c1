"""The relay: one core watch per web process, fanned out to that process's consumers.

Each web process (each event loop, in practice daphne's one) runs its own
:class:`Relay`, started lazily by the first websocket that connects and kept
running. It watches the key range ``[/flags/, end of /segments/)`` in one
watch -- so that a transaction touching flags and segments (a new
environment is filled with both) arrives as one revision -- ignores other
keys in that range (``/projects/``), and delivers each revision's changes of one
(project, environment) as one message to the consumers that follow it.

In-process fan-out: the process's consumers register themselves as *sinks*
(``attach(..., sink=consumer)``) and the relay hands each message straight to
them, in revision order, with the JSON text encoded once and shared by every
sink. No Channels layer sits between the relay and its own process's
consumers: no per-consumer channel, no layer queue scan, no per-message
database hop, no per-consumer encoding. Attaching without a sink (a raw
Channels channel joining :meth:`Relay.group`) still gets the messages through
the layer, with ``prev_revision`` so a lost layer message is detectable.

Exactly once with several web processes: a relay delivers only to the
consumers of its own process (its sinks; group names carry the relay's own id
for layer subscribers). Every process watches the core itself; no event
crosses between processes, so nothing is delivered twice and no election is
needed. The cost is one core watch per web
process, which the core serves cheaply.

Failures: the client resumes a broken watch stream from the revision after the
last delivered batch by itself (no loss, no duplicates). If the watch still
fails (the client raised), the relay re-creates it from the last revision it
published + 1, with backoff. If that revision was compacted, events were lost:
the relay watches again from now and tells every subscribed group to resync
(``live.resync``); consumers then send their clients a fresh snapshot.

Lost layer messages (layer subscribers only; direct delivery loses nothing):
Channels layers drop a group message to a full channel. Each layer message
carries ``prev_revision``, the revision last published to that group; a
subscriber that holds less knows it missed something.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
import weakref
from collections import Counter
from typing import Any, Protocol

from channels.layers import BaseChannelLayer, get_channel_layer

from consensus.client import CompactedError, prefix_end
from flags import keyspace, metrics
from flags.core import core
from flags.live import protocol

log = logging.getLogger(__name__)

WATCH_KEY = keyspace.FLAGS.encode()
WATCH_END = prefix_end(keyspace.SEGMENTS)

EVENT_MESSAGE = "live.event"
"""Channels message type of one revision's changes for one group (handler ``live_event``)."""
RESYNC_MESSAGE = "live.resync"
"""Channels message type telling a group's consumers to send a fresh snapshot (``live_resync``)."""

_BACKOFF_START, _BACKOFF_MAX = 0.05, 2.0


class Sink(Protocol):
    """A consumer in the relay's own process that receives its events directly."""

    async def relay_event(self, message: dict[str, Any], text: str) -> None:
        """One revision's changes of a followed environment: the message and its JSON text.

        Called in revision order; ``message`` and ``text`` are shared by every
        sink and must not be modified.
        """

    def relay_resync(self, project: str, environment: str) -> None:
        """The relay lost events (compaction): re-read the environment (sync; spawn work)."""


class Relay:
    """A process's watch on the core's flags and segments, publishing to per-environment groups.

    ``revision`` is the last revision whose events were all published (or the
    revision the watch was created at). Consumers :meth:`attach` before reading
    their snapshot, after ``await ready()``: every event after the revision the
    watch was created at is then published to them.
    """

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.layer = layer
        self.revision = 0
        self.resyncs = 0
        self.restarts = 0
        self._subscribers: Counter[tuple[str, str]] = Counter()
        """Attachments without a sink (raw Channels channels in :meth:`group`)."""
        self._sinks: dict[tuple[str, str], dict[Sink, None]] = {}
        """Consumers of this process per environment, in attach order."""
        self._published: dict[tuple[str, str], int] = {}
        self._created = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- consumers' side ---------------------------------------------------------------------

    def group(self, project: str, environment: str) -> str:
        """The Channels group of this relay's consumers of one environment (a valid group name)."""
        digest = hashlib.sha256(f"{project}/{environment}".encode()).hexdigest()[:40]
        return f"flagstaff-live.{self.id}.{digest}"

    def attach(self, project: str, environment: str, sink: Sink | None = None) -> str:
        """Register a subscriber of an environment; the group name.

        With a ``sink`` (a consumer of this process) the relay delivers to it
        directly and the group need not be joined; without one, the caller
        joins the returned Channels group.
        """
        key = (project, environment)
        if sink is not None:
            self._sinks.setdefault(key, {})[sink] = None
        else:
            self._subscribers[key] += 1
        return self.group(project, environment)

    def detach(self, project: str, environment: str, sink: Sink | None = None) -> None:
        """Forget one subscriber (``attach``'s undo)."""
        key = (project, environment)
        if sink is not None:
            sinks = self._sinks.get(key)
            if sinks is not None:
                sinks.pop(sink, None)
                if not sinks:
                    del self._sinks[key]
        else:
            self._subscribers[key] -= 1
            if self._subscribers[key] <= 0:
                del self._subscribers[key]
        if key not in self._subscribers and key not in self._sinks:
            self._published.pop(key, None)

    async def ready(self, timeout: float) -> int:
        """Wait until the watch is created (``TimeoutError`` after ``timeout``); ``revision``."""
        self.start()
        async with asyncio.timeout(timeout):
            await self._created.wait()
        return self.revision

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watch task on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"relay-{self.id}")

    async def stop(self) -> None:
        """Cancel the watch task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff = _BACKOFF_START
        start_revision = 0  # 0: from now
        resync = False
        while True:
            try:
                client = core().client()
                async with client.watch(WATCH_KEY, WATCH_END, start_revision=start_revision) as watch:
                    created = await watch.wait_created()
                    if start_revision == 0:
                        self.revision = created
                    self._created.set()
                    backoff = _BACKOFF_START
                    if resync:
                        resync = False
                        await self._resync_all()
                    async for batch in watch:
                        started = time.perf_counter()
                        await self._publish(batch)
                        metrics.relay_published(self.revision, time.perf_counter() - started)
            except asyncio.CancelledError:
                raise
            except CompactedError:
                log.warning("relay %s: revision %d was compacted; consumers resync",
                            self.id, start_revision)
                start_revision, resync = 0, True
                self.resyncs += 1
                continue
            except Exception:
                log.exception("relay %s: the core watch failed; retrying from revision %d",
                              self.id, self.revision + 1)
            self.restarts += 1
            start_revision = self.revision + 1 if self.revision else 0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    # -- publishing -------------------------------------------------------------------------

    async def _publish(self, batch: Any) -> None:
        """Send a watch batch's events: one message per (revision, environment), in order."""
        if not batch.events:  # a progress notification
            self.revision = max(self.revision, int(batch.header.revision))
            return
        by_revision: dict[int, dict[tuple[str, str], list[dict[str, Any]]]] = {}
        last = self.revision
        for event in batch.events:
            kv = event.kv
            revision = int(kv.mod_revision)
            last = max(last, revision)
            key = kv.key.decode("utf-8", "surrogateescape")
            place = protocol.classify(key)
            if place is None:
                continue
            deleted = event.type == 1  # mvccpb.Event.DELETE
            doc = None if deleted else protocol.decode_document(bytes(kv.value))
            by_revision.setdefault(revision, {}).setdefault(
                (place.project, place.environment), []
            ).append(protocol.change("delete" if deleted else "put", key, place, doc))
        for revision in sorted(by_revision):
            for (project, environment), changes in by_revision[revision].items():
                key = (project, environment)
                sinks = self._sinks.get(key)
                if key not in self._subscribers and not sinks:
                    continue
                message = protocol.event_message(project, environment, revision, changes)
                if sinks:
                    text = json.dumps(message)  # once, for every consumer of this process
                    for sink in list(sinks):
                        try:
                            await sink.relay_event(message, text)
                        except Exception:  # one broken socket must not stop the others
                            log.exception("relay %s: delivering revision %d failed",
                                          self.id, revision)
                if key in self._subscribers:
                    # The revision published to this group before: a subscriber that holds
                    # less has lost a message (a layer drops messages to a full channel).
                    layered = {**message, "prev_revision": self._published.get(key, 0)}
                    self._published[key] = revision
                    await self.layer.group_send(
                        self.group(project, environment),
                        {"type": EVENT_MESSAGE, "message": layered})
        self.revision = last

    async def _resync_all(self) -> None:
        for (project, environment), sinks in list(self._sinks.items()):
            for sink in list(sinks):
                sink.relay_resync(project, environment)
        for project, environment in list(self._subscribers):
            await self.layer.group_send(
                self.group(project, environment),
                {"type": RESYNC_MESSAGE, "project": project, "environment": environment},
            )


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Relay] = weakref.WeakKeyDictionary()


def get_relay() -> Relay:
    """The running loop's relay, created and started on first use (the process's one, under daphne)."""
    loop = asyncio.get_running_loop()
    relay = _relays.get(loop)
    if relay is None:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("live updates need a Channels layer (CHANNEL_LAYERS)")
        relay = _relays[loop] = Relay(layer)
    relay.start()
    return relay


async def stop_relay() -> None:
    """Stop and forget the running loop's relay (tests; a web process's shutdown)."""
    relay = _relays.pop(asyncio.get_running_loop(), None)
    if relay is not None:
        await relay.stop()
