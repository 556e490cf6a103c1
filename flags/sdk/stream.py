"""The streaming connection: one websocket to ``/ws/v1/flags/`` feeding a ``ClientCore``.

A session connects (the SDK key as a bearer token), subscribes from the
revision the cache holds (a snapshot on the first connection), applies what
arrives and treats silence longer than ``heartbeat_timeout`` as a dead
connection. Whatever ends a session (refused handshake, network error, close,
stall, server error), ``run`` marks the client STALE (the cache keeps serving),
waits a jittered exponential backoff and starts another, resuming from the
last revision: the server replays what was missed, or sends a snapshot when
that history was compacted. ``docs/sdk.md`` describes the behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from flags.sdk import messages
from flags.sdk.backoff import Backoff
from flags.sdk.core import ClientCore
from flags.sdk.status import ClientState

log = logging.getLogger("flags.sdk")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
REFUSED_CLOSE_CODES = frozenset({4401, 4403})


class SessionEnded(Exception):
    """A streaming session is over; ``refused`` when the platform refused the key/environment."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class Stream:
    """Keeps one environment's cache current over the websocket until cancelled."""

    def __init__(self, core: ClientCore, live_url: str, sdk_key: str, *,
                 heartbeat_timeout: float = 15.0, connect_timeout: float = 10.0,
                 backoff: Backoff | None = None) -> None:
        self.core = core
        self.live_url = live_url
        self.sdk_key = sdk_key
        self.heartbeat_timeout = heartbeat_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.sessions = 0
        """Sessions started (the first connection and every reconnection)."""
        parts = urlsplit(live_url)
        self._origin = f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"

    async def run(self) -> None:
        """Stream until cancelled, reconnecting after every failure."""
        while True:
            try:
                await self._session()
                reason, refused = "the platform closed the stream", False
            except SessionEnded as exc:
                reason, refused = str(exc), exc.refused
            except InvalidStatus as exc:
                status = exc.response.status_code
                reason, refused = f"the platform refused the connection (HTTP {status})", \
                    status in (401, 403)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                reason, refused = f"connection closed (code {code})", code in REFUSED_CLOSE_CODES
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason, refused = f"cannot reach the platform: {exc or type(exc).__name__}", False
            self._lost(reason, refused)
            await asyncio.sleep(self.backoff.next_delay())

    def _lost(self, reason: str, refused: bool) -> None:
        core = self.core
        if refused:
            core.set_state(ClientState.ERROR, reason)
        elif core.status.state is ClientState.INITIALIZING:
            core.set_state(ClientState.INITIALIZING, reason)
        else:
            core.set_state(ClientState.STALE, f"{reason}; serving the last known values "
                                              f"(revision {core.store.revision}), reconnecting")

    async def _session(self) -> None:
        core = self.core
        self.sessions += 1
        async with connect(
            self.live_url, additional_headers={"Authorization": f"Bearer {self.sdk_key}"},
            origin=self._origin, open_timeout=self.connect_timeout, ping_interval=None,  # type: ignore[arg-type]
            close_timeout=1, max_size=MAX_MESSAGE_BYTES,
        ) as socket:
            await socket.send(messages.subscribe(core.project, core.env, core.store.revision))
            while True:
                try:
                    async with asyncio.timeout(self.heartbeat_timeout):
                        frame = await socket.recv()
                except TimeoutError:
                    raise SessionEnded(f"no message for {self.heartbeat_timeout:g} s "
                                       "(heartbeat timeout)") from None
                self.handle(frame)

    def handle(self, frame: str | bytes) -> None:
        """Apply one server frame to the cache (malformed ones are logged and ignored)."""
        core = self.core
        try:
            message = messages.parse(frame, core.project, core.env)
        except messages.MalformedMessage as exc:
            log.warning("flagstaff %s: ignored a malformed server message (%s): %.200r",
                        core.environment, exc, frame)
            return
        if isinstance(message, messages.Snapshot):
            had_data = core.store.data is not None
            changed = core.store.replace(message.revision, message.flags, message.segments)
            if had_data:
                core.emit_changes(changed, message.revision)
        elif isinstance(message, messages.Event):
            keys = core.store.apply(message.revision, [
                (c.op, c.kind, c.name, c.doc) for c in message.changes])
            if keys is not None:
                core.emit_changes(keys, message.revision)
        elif isinstance(message, messages.Subscribed):
            core.store.advance(message.revision)
            self.backoff.reset()
            core.set_state(ClientState.READY, f"streaming ({message.mode})")
        elif isinstance(message, messages.Heartbeat):
            core.store.advance(message.revision)
        elif isinstance(message, messages.ServerError):
            if message.code == "not_found":
                raise SessionEnded(f"the platform does not serve {core.environment} to this key "
                                   f"({message.message})", refused=True)
            if message.code == "unavailable" or core.status.state is not ClientState.READY:
                raise SessionEnded(f"the platform answered {message.code}: {message.message}")
            log.warning("flagstaff %s: server error %s: %s", core.environment, message.code,
                        message.message)
