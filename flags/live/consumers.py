"""The live-updates websocket consumer (``/ws/v1/flags/``) and its authorization check.

One connection may hold several subscriptions, one per (project,
environment). A subscription starts with a snapshot (or, when the client
names the last revision it has and the core's history still holds the events
after it, with those events replayed from the core), then receives the
relay's live events in revision order, each revision once: events at or below
the revision the client already holds are dropped. The protocol is specified
in ``docs/websocket-protocol.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist

from consensus.client import FROM_KEY, CompactedError, EtcdError, op_get, prefix_end
from flags import keyspace
from flags.core import core
from flags.exceptions import FlagstaffError
from flags.live import protocol
from flags.live.access_events import ACCESS_GROUP
from flags.live.relay import Relay, get_relay
from flags.permissions import Perm, forget_cached_permissions, has_permission
from flags.tokens import ApiToken, authenticate_token

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 5.0
CLOSE_UNAUTHENTICATED = 4401


def heartbeat_seconds() -> float:
    """Seconds between heartbeats (setting ``FLAGSTAFF_LIVE_HEARTBEAT_SECONDS``, default 5)."""
    return float(getattr(settings, "FLAGSTAFF_LIVE_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS))


def authorize_subscription(scope: dict[str, Any], project: str, environment: str) -> bool:
    """Whether the connection's principal may follow an environment: the one check for websockets.

    The principal is the API token on ``scope["token"]`` when the client sent
    one (``?key=`` or ``Authorization: Bearer``), else the session's user
    (``AuthMiddlewareStack``). Reading the environment's flags and segments
    is required. Sync (may use the ORM): call it with ``database_sync_to_async``.
    """
    principal = scope.get("token") or scope.get("user")
    return has_permission(principal, Perm.READ, keyspace.flags_prefix(project, environment)) and (
        has_permission(principal, Perm.READ, keyspace.segments_prefix(project, environment))
    )


def presented_secret(scope: dict[str, Any]) -> str | None:
    """The token secret the client sent: ``?key=<secret>`` or ``Authorization: Bearer <secret>``."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("key"):
        return query["key"][0]
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            kind, _, secret = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and secret.strip():
                return secret.strip()
    return None


def authenticate_scope(scope: dict[str, Any]) -> bool:
    """Resolve the connection's principal; True when there is one (a valid token, or a user).

    A presented secret that is unknown, revoked or expired refuses the
    connection (no fallback to the session). Sync: call with
    ``database_sync_to_async``.
    """
    secret = presented_secret(scope)
    if secret is not None:
        scope["token"] = authenticate_token(secret)
        return scope["token"] is not None
    scope["token"] = None
    user = scope.get("user")
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))


def refresh_principal(scope: dict[str, Any]) -> bool:
    """Reload the connection's principal from the database; False when it is no longer usable."""
    forget_cached_permissions(scope.get("user"))
    token = scope.get("token")
    if isinstance(token, ApiToken):
        fresh = ApiToken.objects.select_related("created_by").filter(pk=token.pk).first()
        scope["token"] = fresh
        return fresh is not None and fresh.is_active
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    try:
        user.refresh_from_db()
    except ObjectDoesNotExist:  # the account was deleted
        return False
    return bool(user.is_active)


@dataclass(slots=True)
class _Subscription:
    """One followed environment of a connection: its group and the last revision the client has."""

    project: str
    environment: str
    group: str
    revision: int
    live: bool = False
    """Set once ``subscribed`` was sent; heartbeats only then."""
    streaming: bool = False
    """Relay events go straight to the client; until then they wait in ``pending``."""
    pending: list[tuple[int, str]] | None = None
    """Relay events (revision, JSON text) that arrived while a snapshot or replay was sent."""
    stale: bool = False
    """The relay resynced while the subscription was being set up: snapshot once streaming."""


class DirectDispatchConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """A JSON websocket consumer whose messages are handled without a database hop first.

    Channels runs ``close_old_connections`` in a worker thread before every
    handler; these consumers touch the database only through
    ``database_sync_to_async``, which does that itself in its thread. Skipping
    the hop keeps a client's messages (``unsubscribe``) in order with the
    relay's direct deliveries, and saves a thread round trip per message.
    """

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)


class LiveConsumer(DirectDispatchConsumer):
    """A websocket following environments' flags and segments (browsers by session, SDKs by key)."""

    async def connect(self) -> None:
        self.subscriptions: dict[tuple[str, str], _Subscription] = {}
        self.heartbeat_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        if not await database_sync_to_async(authenticate_scope)(self.scope):
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.relay: Relay = get_relay()
        await self.channel_layer.group_add(ACCESS_GROUP, self.channel_name)
        await self.accept()
        self.heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeats())

    async def disconnect(self, code: int) -> None:
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat_task
        for task in list(getattr(self, "_tasks", ())):
            task.cancel()
        for key in list(getattr(self, "subscriptions", {})):
            await self._drop(key)
        await self.channel_layer.group_discard(ACCESS_GROUP, self.channel_name)

    # -- client messages --------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                      **kwargs: Any) -> None:
        try:
            content = await self.decode_json(text_data) if text_data is not None else None
        except ValueError:
            content = None
        if content is None:
            await self.send_json(protocol.error_message(
                protocol.ERROR_BAD_REQUEST, "messages must be JSON text"))
            return
        await self.receive_json(content, **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "subscribe":
                await self._subscribe(protocol.parse_subscription(content))
            elif kind == "unsubscribe":
                request = protocol.parse_subscription(content)
                await self._drop((request.project, request.environment))
            else:
                raise protocol.ProtocolError(protocol.ERROR_BAD_REQUEST,
                                             "type: must be subscribe or unsubscribe")
        except protocol.ProtocolError as exc:
            project = content.get("project") if isinstance(content, dict) else None
            environment = content.get("environment") if isinstance(content, dict) else None
            named = isinstance(project, str) and isinstance(environment, str)
            await self.send_json(protocol.error_message(
                exc.code, exc.message, project if named else None, environment if named else None))

    async def _subscribe(self, request: protocol.SubscribeRequest) -> None:
        key = (request.project, request.environment)
        if key in self.subscriptions:
            raise protocol.ProtocolError(protocol.ERROR_BAD_REQUEST, "already subscribed")
        allowed = await database_sync_to_async(authorize_subscription)(
            self.scope, request.project, request.environment)
        missing = f"environment {request.environment!r} of project {request.project!r} not found"
        if not allowed:  # as the REST API does: no hint that it exists
            raise protocol.ProtocolError(protocol.ERROR_NOT_FOUND, missing)
        timeout = core().timeout
        try:
            await self.relay.ready(timeout)
            if await core().aget(keyspace.environment_key(*key)) is None:
                raise protocol.ProtocolError(protocol.ERROR_NOT_FOUND, missing)
        except (TimeoutError, FlagstaffError) as exc:
            raise protocol.ProtocolError(protocol.ERROR_UNAVAILABLE,
                                         f"the core is unavailable: {exc}") from exc
        # Join the group before reading: every event after the read reaches us, and
        # those the read already covered are dropped by revision.
        subscription = _Subscription(*key, group="", revision=0, pending=[])
        self.subscriptions[key] = subscription
        subscription.group = self.relay.attach(*key, sink=self)
        try:
            mode = "snapshot"
            if request.since_revision is not None and await self._replay(
                    subscription, request.since_revision):
                mode = "resume"
            else:
                await self._send_snapshot(subscription)
        except (TimeoutError, EtcdError, FlagstaffError) as exc:
            await self._drop(key)
            raise protocol.ProtocolError(protocol.ERROR_UNAVAILABLE,
                                         f"the core is unavailable: {exc}") from exc
        await self.send_json(protocol.subscribed_message(*key, mode, subscription.revision))
        subscription.live = True
        await self._stream(subscription)

    async def _stream(self, subscription: _Subscription) -> None:
        """Send the relay events that waited (those after ``revision``), then stream directly."""
        while subscription.pending:
            waiting, subscription.pending = subscription.pending, []
            for revision, text in waiting:
                if revision > subscription.revision:
                    subscription.revision = revision
                    await self.send(text_data=text)
        subscription.streaming = True  # no await since the loop saw ``pending`` empty
        if subscription.stale:
            subscription.stale = False
            self.relay_resync(subscription.project, subscription.environment)

    async def _drop(self, key: tuple[str, str]) -> None:
        subscription = self.subscriptions.pop(key, None)
        if subscription is not None:
            self.relay.detach(*key, sink=self)

    # -- reading the core -------------------------------------------------------------------

    async def _send_snapshot(self, subscription: _Subscription) -> None:
        """Send the environment's flags and segments, read at one revision."""
        flags_prefix = keyspace.flags_prefix(subscription.project, subscription.environment)
        segments_prefix = keyspace.segments_prefix(subscription.project, subscription.environment)
        async with asyncio.timeout(core().timeout * 2):
            response = await core().client().txn(success=[
                op_get(flags_prefix, prefix_end(flags_prefix)),
                op_get(segments_prefix, prefix_end(segments_prefix)),
            ])
        documents: list[dict[str, Any]] = [{}, {}]
        for index, op in enumerate(response.responses):
            for kv in op.response_range.kvs:
                place = protocol.classify(kv.key.decode("utf-8", "surrogateescape"))
                if place is not None:
                    documents[index][place.name] = protocol.decode_document(bytes(kv.value))
        subscription.revision = int(response.header.revision)
        await self.send_json(protocol.snapshot_message(
            subscription.project, subscription.environment, subscription.revision,
            documents[0], documents[1]))

    async def _replay(self, subscription: _Subscription, since: int) -> bool:
        """Send the events after ``since`` up to the current revision from the core's history.

        False (nothing sent) when ``since`` was compacted or lies in the future:
        the caller sends a snapshot instead. The history is read by a watch over
        the whole key space from ``since + 1``: every revision holds at least one
        event there, so the watch reaches the current revision even when this
        environment had no change in between.
        """
        client = core().client()
        async with asyncio.timeout(core().timeout * 4):
            current = int((await client.range(FROM_KEY, FROM_KEY, count_only=True)).header.revision)
            if since > current:
                return False
            replayed: list[dict[str, Any]] = []
            if since < current:
                try:
                    async with client.watch(FROM_KEY, FROM_KEY, start_revision=since + 1) as watch:
                        async for batch in watch:
                            done = self._collect(subscription, batch, current, replayed)
                            if done:
                                break
                except CompactedError:
                    return False
        for message in replayed:
            await self.send_json(message)
        subscription.revision = max(since, current)
        return True

    @staticmethod
    def _collect(subscription: _Subscription, batch: Any, current: int,
                 out: list[dict[str, Any]]) -> bool:
        """Append a history batch's events of the subscription (up to ``current``); True when done."""
        by_revision: dict[int, list[dict[str, Any]]] = {}
        done = False
        for event in batch.events:
            revision = int(event.kv.mod_revision)
            if revision > current:
                done = True
                continue
            done = done or revision == current
            key = event.kv.key.decode("utf-8", "surrogateescape")
            place = protocol.classify(key)
            if place is None or (place.project, place.environment) != (
                    subscription.project, subscription.environment):
                continue
            deleted = event.type == 1  # mvccpb.Event.DELETE
            doc = None if deleted else protocol.decode_document(bytes(event.kv.value))
            by_revision.setdefault(revision, []).append(
                protocol.change("delete" if deleted else "put", key, place, doc))
        for revision in sorted(by_revision):
            out.append(protocol.event_message(
                subscription.project, subscription.environment, revision, by_revision[revision]))
        return done

    # -- relay messages ---------------------------------------------------------------------

    async def relay_event(self, message: dict[str, Any], text: str) -> None:
        """A revision's changes from the relay: forwarded unless the client already has it.

        The relay calls this directly, in revision order, with the JSON text
        it encoded once for every consumer. While a snapshot or replay is being
        sent, the event waits and follows the ``subscribed`` message.
        """
        subscription = self.subscriptions.get((message["project"], message["environment"]))
        if subscription is None:
            return
        revision = message["revision"]
        if not subscription.streaming:
            assert subscription.pending is not None
            subscription.pending.append((revision, text))
            return
        if revision <= subscription.revision:
            return
        subscription.revision = revision
        await self.send(text_data=text)

    def relay_resync(self, project: str, environment: str) -> None:
        """The relay lost events (compaction): send the subscription a fresh snapshot.

        Events arriving meanwhile wait and follow the snapshot.
        """
        subscription = self.subscriptions.get((project, environment))
        if subscription is None:
            return
        if not subscription.streaming:  # being set up: resync once it streams
            subscription.stale = True
            return
        subscription.streaming = False
        subscription.pending = []
        task = asyncio.get_running_loop().create_task(self._resync(subscription))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync(self, subscription: _Subscription) -> None:
        try:
            await self._send_snapshot(subscription)
        except (TimeoutError, EtcdError, FlagstaffError) as exc:
            log.warning("resync of %s/%s failed: %s; closing", subscription.project,
                        subscription.environment, exc)
            await self.close(code=1011)
            return
        await self._stream(subscription)

    async def access_changed(self, message: dict[str, Any]) -> None:
        """Permissions changed somewhere: re-check every subscription now (docs/access-control.md).

        A revoked token or deactivated user closes the socket
        (``CLOSE_UNAUTHENTICATED``); a subscription no longer allowed is
        dropped and the client gets an ``error`` ``not_found`` for it.
        """
        if not await database_sync_to_async(refresh_principal)(self.scope):
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        for key in list(self.subscriptions):
            allowed = await database_sync_to_async(authorize_subscription)(self.scope, *key)
            if not allowed and key in self.subscriptions:
                await self._drop(key)
                await self.send_json(protocol.error_message(
                    protocol.ERROR_NOT_FOUND,
                    f"environment {key[1]!r} of project {key[0]!r} not found", *key))

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(heartbeat_seconds())
            for subscription in [s for s in self.subscriptions.values() if s.live]:
                await self.send_json(protocol.heartbeat_message(
                    subscription.project, subscription.environment, subscription.revision))
