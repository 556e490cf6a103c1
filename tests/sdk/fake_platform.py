"""A scripted stand-in for the platform's ``/ws/v1/flags/`` websocket, on a loopback port.

It speaks the protocol of ``docs/websocket-protocol.md`` from an in-memory
history, in a thread of its own (so synchronous and asyncio clients can both
be tested against it), and lets a test misbehave on purpose: stall after the
handshake, send garbage, drop every connection, forget history (compaction),
refuse the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition",
             ) -> None:
    """Poll ``condition`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class FakePlatform:
    """The websocket half of a platform serving one environment from an in-memory history."""

    def __init__(self, project: str = "shop", environment: str = "production",
                 heartbeat: float = 0.2) -> None:
        self.project, self.environment = project, environment
        self.heartbeat = heartbeat
        self.revision = 10
        self.flags: dict[str, Any] = {}
        self.segments: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.compacted = 0
        self.subscribes: list[dict[str, Any]] = []
        self.headers: list[Any] = []
        self.mode: str = "normal"  # normal | stall | silent-after-subscribe | refuse
        self._live: set[ServerConnection] = set()
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = self._call(self._start())

    # -- control from the test thread ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    def put_flag(self, name: str, doc: Any) -> int:
        """Store a flag at a new revision and stream the event; the revision."""
        return self._call(self._change([{"op": "put", "key": f"/flags/x/{name}", "kind": "flag",
                                         "flag": name, "doc": doc}]))

    def delete_flag(self, name: str) -> int:
        return self._call(self._change([{"op": "delete", "key": f"/flags/x/{name}",
                                         "kind": "flag", "flag": name, "doc": None}]))

    def put_segment(self, name: str, doc: Any) -> int:
        return self._call(self._change([{"op": "put", "key": f"/segments/x/{name}",
                                         "kind": "segment", "segment": name, "doc": doc}]))

    def set_quietly(self, flags: dict[str, Any], revision_step: int = 1) -> None:
        """Change the state without streaming it (what a client misses while away)."""
        def apply() -> None:
            for name, doc in flags.items():
                self.revision += revision_step
                self.flags[name] = doc
                self.history.append(self._event(self.revision, [
                    {"op": "put", "key": f"/flags/x/{name}", "kind": "flag", "flag": name,
                     "doc": doc}]))
        self._loop.call_soon_threadsafe(apply)
        self._call(asyncio.sleep(0))

    def compact(self) -> None:
        """Forget the history: resuming clients get a snapshot."""
        def apply() -> None:
            self.compacted = self.revision
            self.history.clear()
        self._loop.call_soon_threadsafe(apply)
        self._call(asyncio.sleep(0))

    def send_raw(self, text: str) -> None:
        """Send a frame as is to every connected client."""
        async def send() -> None:
            for socket in list(self._live):
                with contextlib.suppress(ConnectionClosed):
                    await socket.send(text)
        self._call(send())

    def drop_connections(self) -> None:
        """Close every connection at once (as a web process that goes away)."""
        async def drop() -> None:
            for socket in list(self._live):
                socket.transport.abort()
        self._call(drop())

    @property
    def connections(self) -> int:
        return len(self._live)

    def stop(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            for socket in list(self._live):
                socket.transport.abort()
            self._server.close()
            await self._server.wait_closed()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    # -- the server --------------------------------------------------------------------------------

    async def _start(self) -> int:
        self._server = await serve(self._session, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def _event(self, revision: int, changes: list[dict[str, Any]]) -> dict[str, Any]:
        return {"type": "event", "project": self.project, "environment": self.environment,
                "revision": revision, "changes": changes, "actor": None}

    async def _change(self, changes: list[dict[str, Any]]) -> int:
        self.revision += 1
        for change in changes:
            target = self.flags if change["kind"] == "flag" else self.segments
            name = change[change["kind"]]
            if change["op"] == "delete":
                target.pop(name, None)
            else:
                target[name] = change["doc"]
        event = self._event(self.revision, changes)
        self.history.append(event)
        for socket in list(self._live):
            if getattr(socket, "subscribed", False):
                socket.sent_revision = self.revision  # type: ignore[attr-defined]
                with contextlib.suppress(ConnectionClosed):
                    await socket.send(json.dumps(event))
        return self.revision

    async def _session(self, socket: ServerConnection) -> None:
        self.headers.append(socket.request.headers if socket.request else {})
        self._live.add(socket)
        try:
            if self.mode == "refuse":
                await socket.close(4401)
                return
            request = json.loads(await socket.recv())
            self.subscribes.append(request)
            if self.mode == "stall":
                await socket.wait_closed()
                return
            since = request.get("since_revision")
            base = {"project": self.project, "environment": self.environment}
            if since is None or since < self.compacted or since > self.revision:
                await socket.send(json.dumps({"type": "snapshot", **base,
                                              "revision": self.revision, "flags": self.flags,
                                              "segments": self.segments}))
                mode = "snapshot"
            else:
                for event in self.history:
                    if event["revision"] > since:
                        await socket.send(json.dumps(event))
                mode = "resume"
            await socket.send(json.dumps({"type": "subscribed", **base, "mode": mode,
                                          "revision": self.revision}))
            socket.subscribed = True  # type: ignore[attr-defined]
            socket.sent_revision = self.revision  # type: ignore[attr-defined]
            if self.mode == "silent-after-subscribe":
                await socket.wait_closed()
                return
            while True:
                await asyncio.sleep(self.heartbeat)
                await socket.send(json.dumps({"type": "heartbeat", **base,
                                              "revision": socket.sent_revision}))  # type: ignore[attr-defined]
        except ConnectionClosed:
            pass
        finally:
            self._live.discard(socket)
