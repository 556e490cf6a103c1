"""Evaluated values for browsers: ``/ws/v1/values/``, authenticated by a browser key.

A browser key (``fs_browser_...``, ``?key=`` on the URL since browsers cannot
set websocket headers) is scoped to one environment and may only *evaluate*:
the server evaluates every flag of that environment for the context the page
sends and sends the values, never the documents (no rules, targets, segments
or variations that were not served). Protocol (``docs/sdk.md``):

client -> server: ``{"type": "identify", "context": {...}}`` (again whenever the
user changes);
server -> client: ``values`` (every flag's value, replaces what the page held),
``changed`` (the flags whose value changed at a revision, plus ``removed``),
``heartbeat``, ``error``.

Updates come straight from the process's relay (the consumer is one of its
sinks, as ``/ws/v1/flags/``'s are); a relay resync makes the consumer re-read
the environment and send a fresh ``values``. A reconnecting page simply identifies
again: ``values`` is always complete, so nothing can be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from channels.db import database_sync_to_async

from consensus.client import EtcdError, op_get, prefix_end
from flags import keyspace
from flags.core import core
from flags.engine import CompiledFlag, CompiledSegment, compile_flag, compile_segment
from flags.exceptions import FlagstaffError
from flags.live import protocol
from flags.live.access_events import ACCESS_GROUP
from flags.live.consumers import (
    CLOSE_UNAUTHENTICATED,
    DirectDispatchConsumer,
    heartbeat_seconds,
    presented_secret,
    refresh_principal,
)
from flags.live.relay import Relay, get_relay
from flags.permissions import Perm, has_permission
from flags.tokens import TokenKind, authenticate_token

log = logging.getLogger(__name__)

MAX_CONTEXT_BYTES = 8192


def authenticate_browser_key(scope: dict[str, Any]) -> tuple[str, str] | None:
    """The environment a browser key on the connection may evaluate; None when refused.

    Sync (uses the ORM): call with ``database_sync_to_async``.
    """
    secret = presented_secret(scope)
    if secret is None:
        return None
    token = authenticate_token(secret, kinds=[TokenKind.BROWSER])
    environment = token.environment if token is not None else None
    if environment is None or not has_permission(
            token, Perm.EVALUATE, keyspace.flags_prefix(*environment)):
        return None
    scope["token"] = token
    return environment


def evaluated(result: Any) -> dict[str, Any]:
    """What a browser learns of one evaluation: value, variation index, reason kind."""
    reason: dict[str, Any] = {"kind": result.reason.kind.value}
    if result.reason.error_kind is not None:
        reason["error_kind"] = result.reason.error_kind.value
    return {"value": result.value, "variation": result.variation_index, "reason": reason}


class EvaluatedValuesConsumer(DirectDispatchConsumer):
    """One page's flags evaluated server-side for its context, kept current."""

    async def connect(self) -> None:
        self.heartbeat_task: asyncio.Task[None] | None = None
        self.group: str | None = None
        environment = await database_sync_to_async(authenticate_browser_key)(self.scope)
        if environment is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.project, self.environment = environment
        self.context: dict[str, Any] | None = None
        self.revision = 0
        self.flags: dict[str, CompiledFlag] = {}
        self.segments: dict[str, CompiledSegment] = {}
        self.values: dict[str, dict[str, Any]] = {}
        self.streaming = False
        self.pending: list[dict[str, Any]] = []
        self.stale = False
        self._tasks: set[asyncio.Task[None]] = set()
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
        if self.group is not None:
            self.relay.detach(self.project, self.environment, sink=self)
            self.group = None
        await self.channel_layer.group_discard(ACCESS_GROUP, self.channel_name)

    async def _error(self, code: str, message: str) -> None:
        await self.send_json(protocol.error_message(code, message, self.project, self.environment))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                      **kwargs: Any) -> None:
        if text_data is None or len(text_data) > MAX_CONTEXT_BYTES:
            await self._error(protocol.ERROR_BAD_REQUEST, "messages must be JSON text of at most "
                                                          f"{MAX_CONTEXT_BYTES} bytes")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self._error(protocol.ERROR_BAD_REQUEST, "messages must be JSON text")
            return
        if not isinstance(content, dict) or content.get("type") != "identify":
            await self._error(protocol.ERROR_BAD_REQUEST, "type: must be identify")
            return
        context = content.get("context")
        if not isinstance(context, dict) or not isinstance(context.get("key"), str) \
                or not context["key"]:
            await self._error(protocol.ERROR_BAD_REQUEST,
                              "context: must be an object with a non-empty string key")
            return
        self.context = context
        try:
            if self.group is None:
                await self.relay.ready(core().timeout)
                self.group = self.relay.attach(self.project, self.environment, sink=self)
                try:
                    await self._read()
                    await self._send_values()
                except BaseException:
                    self.relay.detach(self.project, self.environment, sink=self)
                    self.group, self.pending = None, []
                    raise
                await self._stream()
            elif self.streaming:
                await self._send_values()
        except (TimeoutError, EtcdError, FlagstaffError) as exc:
            await self._error(protocol.ERROR_UNAVAILABLE, f"the core is unavailable: {exc}")

    # -- state ------------------------------------------------------------------------------

    async def _read(self) -> None:
        """Load the environment's flags and segments at one revision."""
        flags_prefix = keyspace.flags_prefix(self.project, self.environment)
        segments_prefix = keyspace.segments_prefix(self.project, self.environment)
        async with asyncio.timeout(core().timeout * 2):
            response = await core().client().txn(success=[
                op_get(flags_prefix, prefix_end(flags_prefix)),
                op_get(segments_prefix, prefix_end(segments_prefix)),
            ])
        flags: dict[str, CompiledFlag] = {}
        segments: dict[str, CompiledSegment] = {}
        for index, op in enumerate(response.responses):
            for kv in op.response_range.kvs:
                place = protocol.classify(kv.key.decode("utf-8", "surrogateescape"))
                if place is None:
                    continue
                doc = protocol.decode_document(bytes(kv.value))
                if index == 0:
                    flags[place.name] = compile_flag(doc)
                else:
                    segments[place.name] = compile_segment(doc)
        self.flags, self.segments = flags, segments
        self.revision = max(self.revision, int(response.header.revision))

    def _evaluate(self, names: Any) -> dict[str, dict[str, Any]]:
        return {name: evaluated(self.flags[name].evaluate(self.context, self.segments))
                for name in names if name in self.flags}

    async def _send_values(self) -> None:
        self.values = self._evaluate(self.flags)
        await self.send_json({"type": "values", "project": self.project,
                              "environment": self.environment, "revision": self.revision,
                              "values": self.values})

    # -- relay messages ---------------------------------------------------------------------

    async def relay_event(self, message: dict[str, Any], text: str) -> None:
        """A revision's changes from the relay (called directly, in revision order).

        While the environment is being (re-)read the event waits and is applied
        after the fresh ``values``.
        """
        if not self.streaming:
            self.pending.append(message)
            return
        await self._apply(message)

    async def _stream(self) -> None:
        """Apply the relay events that waited (those after ``revision``), then apply directly."""
        while self.pending:
            waiting, self.pending = self.pending, []
            for event in waiting:
                await self._apply(event)
        self.streaming = True  # no await since the loop saw ``pending`` empty
        if self.stale:
            self.stale = False
            self.relay_resync(self.project, self.environment)

    async def _apply(self, event: dict[str, Any]) -> None:
        """Re-evaluate what a revision's changes touch and send what changed."""
        if event["revision"] <= self.revision or self.context is None:
            return
        touched: set[str] = set()
        segments_changed: set[str] = set()
        for change in event["changes"]:
            name = change[change["kind"]]
            if change["kind"] == "flag":
                touched.add(name)
                if change["op"] == "delete":
                    self.flags.pop(name, None)
                else:
                    self.flags[name] = compile_flag(change["doc"])
            else:
                segments_changed.add(name)
                if change["op"] == "delete":
                    self.segments.pop(name, None)
                else:
                    self.segments[name] = compile_segment(change["doc"])
        if segments_changed:
            touched |= {n for n, f in self.flags.items() if f.segment_keys & segments_changed}
        self.revision = event["revision"]
        fresh = self._evaluate(touched)
        removed = sorted(n for n in touched if n not in self.flags and n in self.values)
        changed = {n: v for n, v in fresh.items() if self.values.get(n) != v}
        for name in removed:
            del self.values[name]
        self.values.update(changed)
        if changed or removed:
            await self.send_json({"type": "changed", "project": self.project,
                                  "environment": self.environment, "revision": self.revision,
                                  "values": changed, "removed": removed})

    def relay_resync(self, project: str, environment: str) -> None:
        """Events may have been lost: re-read the environment and send every value again."""
        if not self.streaming:  # being read: re-read once that is done
            self.stale = True
            return
        self.streaming = False
        task = asyncio.get_running_loop().create_task(self._resync())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync(self) -> None:
        try:
            await self._read()
            await self._send_values()
        except (TimeoutError, EtcdError, FlagstaffError) as exc:
            log.warning("values resync of %s/%s failed: %s; closing", self.project,
                        self.environment, exc)
            await self.close(code=1011)
            return
        await self._stream()

    async def access_changed(self, message: dict[str, Any]) -> None:
        """Permissions or tokens changed: close when this browser key no longer works."""
        usable = await database_sync_to_async(refresh_principal)(self.scope)
        if usable:
            token = self.scope["token"]
            usable = await database_sync_to_async(has_permission)(
                token, Perm.EVALUATE, keyspace.flags_prefix(self.project, self.environment))
        if not usable:
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(heartbeat_seconds())
            if self.group is not None:
                await self.send_json(protocol.heartbeat_message(
                    self.project, self.environment, self.revision))
