"""The services page's live updates: a per-process relay of ``/services/`` and its websocket consumer.

As ``flags.live`` does for flags: each web process runs one
:class:`ServicesRelay` (per event loop, started by the first connection)
watching ``/services/`` in the core and publishing each revision's instance
changes to a Channels group of its own; every :class:`ServicesConsumer` of that
process joins the group, then reads a snapshot, and forwards the events after
the snapshot's revision. Messages to the browser (JSON):

- ``{"type": "snapshot", "revision": R, "instances": [...]}`` -- on connect
  and after a resync (the relay's watch lost history to compaction);
- ``{"type": "up"|"changed"|"down", "revision": R, "instance": {...}}``;
- ``{"type": "heartbeats", "at": T, "last": {key: unix seconds}}`` -- every
  ``FLAGSTAFF_LIVE_HEARTBEAT_SECONDS``, the instances' last lease renewals.

Only instances of services the principal may read are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import BaseChannelLayer, get_channel_layer

from consensus.client import CompactedError
from discovery.catalog import Visibility, alast_heartbeats, aread_catalog
from discovery.instances import Instance, parse_key, service_prefix
from flags.core import core
from flags.live.consumers import CLOSE_UNAUTHENTICATED, authenticate_scope, heartbeat_seconds

log = logging.getLogger(__name__)

EVENT_MESSAGE = "services.event"
RESYNC_MESSAGE = "services.resync"
_BACKOFF_START, _BACKOFF_MAX = 0.05, 2.0


class ServicesRelay:
    """A process's watch on ``/services/``, publishing instance changes to its group."""

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.layer = layer
        self.group = f"flagstaff-services.{self.id}"
        self.revision = 0
        self._created = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def ready(self, timeout: float) -> None:
        self.start()
        async with asyncio.timeout(timeout):
            await self._created.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff, start, resync = _BACKOFF_START, 0, False
        while True:
            try:
                async with core().client().watch_prefix(
                        service_prefix(), start_revision=start, prev_kv=True) as watch:
                    created = await watch.wait_created()
                    if start == 0:
                        self.revision = created
                    self._created.set()
                    backoff = _BACKOFF_START
                    if resync:
                        resync = False
                        await self.layer.group_send(self.group, {"type": RESYNC_MESSAGE})
                    async for batch in watch:
                        await self._publish(batch)
            except asyncio.CancelledError:
                raise
            except CompactedError:
                start, resync = 0, True
                continue
            except Exception:
                log.exception("services relay %s: the core watch failed; retrying", self.id)
            start = self.revision + 1 if self.revision else 0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _publish(self, batch: Any) -> None:
        for event in batch.events:
            kv = event.kv
            revision = int(kv.mod_revision)
            parsed = parse_key(bytes(kv.key).decode("utf-8", "replace"))
            if parsed is None:
                continue
            if event.type == 0:  # PUT
                try:
                    instance = Instance.from_kv(kv).to_json()
                except (ValueError, KeyError, TypeError):
                    continue
                kind = "up" if kv.create_revision == kv.mod_revision else "changed"
            else:
                kind = "down"
                instance = {"service": parsed[0], "instance_id": parsed[1], "revision": revision}
            await self.layer.group_send(self.group, {
                "type": EVENT_MESSAGE, "kind": kind, "revision": revision, "instance": instance,
            })
            self.revision = max(self.revision, revision)
        if not batch.events:
            self.revision = max(self.revision, int(batch.header.revision))


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ServicesRelay] = (
    weakref.WeakKeyDictionary())


def get_services_relay() -> ServicesRelay:
    """The running loop's relay, created and started on first use."""
    loop = asyncio.get_running_loop()
    relay = _relays.get(loop)
    if relay is None:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("live updates need a Channels layer (CHANNEL_LAYERS)")
        relay = _relays[loop] = ServicesRelay(layer)
    relay.start()
    return relay


async def stop_services_relay() -> None:
    relay = _relays.pop(asyncio.get_running_loop(), None)
    if relay is not None:
        await relay.stop()


class ServicesConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """``/ws/v1/services/``: the catalog as it changes, for the services page."""

    async def connect(self) -> None:
        self.revision = 0
        self.synced = False
        self.heartbeat_task: asyncio.Task[None] | None = None
        self.instances: dict[str, Instance] = {}
        if not await database_sync_to_async(authenticate_scope)(self.scope):
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        principal = self.scope.get("token") or self.scope.get("user")
        self.visibility = await database_sync_to_async(Visibility)(principal)
        self.relay = get_services_relay()
        await self.accept()
        await self.channel_layer.group_add(self.relay.group, self.channel_name)
        await self._snapshot()
        self.heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeats())

    async def disconnect(self, code: int) -> None:
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat_task
        relay = getattr(self, "relay", None)
        if relay is not None:
            await self.channel_layer.group_discard(relay.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass  # nothing to ask: the page follows the whole visible catalog

    async def _may_read(self, service: str) -> bool:
        return bool(await database_sync_to_async(self.visibility.may_read)(service))

    async def _snapshot(self) -> None:
        await self.relay.ready(core().timeout)
        catalog = await aread_catalog(core().client())
        visible = [i for i in catalog.instances if await self._may_read(i.service)]
        self.instances = {i.key: i for i in visible}
        self.revision = catalog.revision
        self.synced = True
        await self.send_json({"type": "snapshot", "revision": catalog.revision,
                              "instances": [i.to_json() for i in visible]})

    async def services_event(self, message: dict[str, Any]) -> None:
        if not self.synced or message["revision"] <= self.revision:
            return  # covered by the snapshot
        instance = message["instance"]
        if not await self._may_read(instance["service"]):
            return
        key = f"{service_prefix(instance['service'])}{instance['instance_id']}"
        if message["kind"] == "down":
            self.instances.pop(key, None)
        else:
            self.instances[key] = Instance(
                service=instance["service"], instance_id=instance["instance_id"],
                address=instance["address"], port=instance["port"], ttl=instance["ttl"],
                lease_id=instance["lease_id"])
        await self.send_json({"type": message["kind"], "revision": message["revision"],
                              "instance": instance})

    async def services_resync(self, message: dict[str, Any]) -> None:
        await self._snapshot()

    async def _heartbeats(self) -> None:
        while True:  # the first right after the snapshot, then every heartbeat period
            try:
                beats = await alast_heartbeats(core().client(), list(self.instances.values()))
            except Exception:
                log.debug("services page heartbeats failed", exc_info=True)
            else:
                await self.send_json({"type": "heartbeats", "at": time.time(), "last": beats})
            await asyncio.sleep(heartbeat_seconds())
