"""The asyncio flavour of the SDK client: ``AsyncClient``, streaming on the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

from flags.sdk.backoff import Backoff
from flags.sdk.core import ClientCore, Endpoints, Evaluations
from flags.sdk.reporting import flush, report_periodically
from flags.sdk.status import ClientState, Status
from flags.sdk.stream import Stream


class AsyncClient(Evaluations):
    """A Flagstaff SDK client for asyncio applications.

    Create it inside a running event loop; it streams on that loop. Evaluation
    methods are plain (synchronous, local, never raising); ``wait_until_ready``
    and ``close`` are coroutines. Listeners may be plain functions or
    coroutine functions. See ``Client`` for the arguments.
    """

    def __init__(self, url: str, sdk_key: str, environment: str, *,
                 bootstrap: Mapping[str, Any] | str | Path | None = None, offline: bool = False,
                 heartbeat_timeout: float = 15.0, connect_timeout: float = 10.0,
                 reconnect_initial: float = 0.2, reconnect_max: float = 30.0,
                 events_interval: float | None = 60.0) -> None:
        self.endpoints = Endpoints.from_url(url)
        self.sdk_key = sdk_key
        self.core = ClientCore(environment, bootstrap=bootstrap, offline=offline,
                               count_evaluations=events_interval is not None and not offline)
        loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.core.schedule = self._spawn
        self._ready = asyncio.Event()
        self.core.on_status(self._on_status)
        self.stream: Stream | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._report_task: asyncio.Task[None] | None = None
        if not offline:
            self.stream = Stream(self.core, self.endpoints.live_url, sdk_key,
                                 heartbeat_timeout=heartbeat_timeout,
                                 connect_timeout=connect_timeout,
                                 backoff=Backoff(reconnect_initial, reconnect_max))
            self._stream_task = loop.create_task(self.stream.run(), name="flagstaff-stream")
            if self.core.counter is not None and events_interval is not None:
                self._report_task = loop.create_task(report_periodically(
                    self.core.counter, self.endpoints.base_url, sdk_key, environment,
                    events_interval), name="flagstaff-report")
        else:
            self._ready.set()

    def _spawn(self, awaitable: Awaitable[None]) -> None:
        async def run() -> None:
            await awaitable

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_status(self, status: Status) -> None:
        if status.state is ClientState.READY:
            self._ready.set()

    # -- lifecycle --------------------------------------------------------------------------

    async def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Wait for the first snapshot (at most ``timeout`` s); whether the client is ready."""
        if self._ready.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        return self._ready.is_set()

    @property
    def status(self) -> Status:
        """The client's state (READY, STALE, ...), why, and the revision it holds."""
        return self.core.status

    async def close(self) -> None:
        """Stop streaming, send the last evaluation counts, and stop."""
        for task in (self._stream_task, self._report_task):
            if task is not None:
                task.cancel()
        for task in (self._stream_task, self._report_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._report_task is not None and self.core.counter is not None:
            await asyncio.to_thread(flush, self.core.counter, self.endpoints.base_url,
                                    self.sdk_key, self.core.environment, 1.0)
        self.core.set_state(ClientState.CLOSED, "closed")

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
