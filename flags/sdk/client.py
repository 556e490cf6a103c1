"""The synchronous flavour of the SDK client: ``Client``, streaming on a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flags.sdk.backoff import Backoff
from flags.sdk.core import ClientCore, Endpoints, Evaluations
from flags.sdk.reporting import flush, report_periodically
from flags.sdk.status import ClientState, Status
from flags.sdk.stream import Stream


class Client(Evaluations):
    """A Flagstaff SDK client: a local cache of one environment, kept current over a websocket.

    ``url`` is the platform's address (``https://flags.example.com``),
    ``sdk_key`` an SDK key (``fs_sdk_...``) and ``environment``
    ``"<project>/<environment>"``. The client connects at once, in a daemon
    thread of its own; evaluations are local and never raise, and until the
    first snapshot they return the default with reason ERROR CLIENT_NOT_READY
    (unless ``bootstrap`` data was given: a dict or the path of a JSON file as
    written by ``export()``). ``offline=True`` never connects (bootstrap data
    only). Change and status listeners run on the client's thread.

    ``heartbeat_timeout``: silence (no message, heartbeats included) after which
    the connection is considered dead; ``reconnect_initial``/``reconnect_max``:
    the backoff between attempts; ``events_interval``: seconds between
    evaluation-count reports (None: do not count).
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
        self.stream: Stream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._main: asyncio.Task[None] | None = None
        if offline:
            return
        self.stream = Stream(self.core, self.endpoints.live_url, sdk_key,
                             heartbeat_timeout=heartbeat_timeout, connect_timeout=connect_timeout,
                             backoff=Backoff(reconnect_initial, reconnect_max))
        self._events_interval = events_interval
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"flagstaff-{environment}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._main = loop.create_task(self._streams())
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._main)
        finally:
            loop.close()

    async def _streams(self) -> None:
        assert self.stream is not None
        tasks = [asyncio.create_task(self.stream.run())]
        counter, interval = self.core.counter, self._events_interval
        if counter is not None and interval is not None:
            tasks.append(asyncio.create_task(report_periodically(
                counter, self.endpoints.base_url, self.sdk_key, self.core.environment, interval)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if counter is not None:
                await asyncio.to_thread(flush, counter, self.endpoints.base_url, self.sdk_key,
                                        self.core.environment, 1.0)

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until the first snapshot arrived (at most ``timeout`` s); whether it did."""
        return self.core.ready.wait(timeout)

    @property
    def status(self) -> Status:
        """The client's state (READY, STALE, ...), why, and the revision it holds."""
        return self.core.status

    def close(self) -> None:
        """Stop streaming, send the last evaluation counts, and join the thread."""
        loop, main, thread = self._loop, self._main, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            if main is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(main.cancel)
            if thread is not threading.current_thread():  # not from a listener
                thread.join(timeout=10)
        self.core.set_state(ClientState.CLOSED, "closed")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
