"""What both client flavours share: configuration, the cache, evaluation, listeners and status.

``ClientCore`` never does I/O itself: the asyncio stream (``stream.Stream``)
feeds it snapshots and events, and the flavours (``client.Client``,
``aio.AsyncClient``) decide on which event loop and thread that happens.
Evaluation is local, synchronous and never raises.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flags.engine import ErrorKind, EvaluationResult, FlagKind, Reason, ReasonKind
from flags.sdk.reporting import EvaluationCounter
from flags.sdk.status import ClientState, Status
from flags.sdk.store import FlagStore, load_bootstrap

log = logging.getLogger("flags.sdk")

LIVE_PATH = "/ws/v1/flags/"


@dataclass(frozen=True, slots=True)
class EvaluationDetail:
    """A flag's value for a context, with the variation index and the reason.

    ``variation`` is None when ``value`` is the caller's default (ERROR, or off
    without an off variation). ``stale`` is True when the client was not
    streaming when it evaluated (the value may be out of date).
    """

    value: Any
    variation: int | None
    reason: Reason
    stale: bool = False

    @property
    def is_error(self) -> bool:
        """Whether the reason is ERROR (so ``value`` is the caller's default)."""
        return self.reason.kind is ReasonKind.ERROR


@dataclass(frozen=True, slots=True)
class FlagChange:
    """A flag whose evaluation may have changed, and the revision that changed it.

    ``deleted`` is True when the flag is gone (evaluations now return the default).
    """

    key: str
    revision: int | None
    deleted: bool


ChangeCallback = Callable[[FlagChange], "Awaitable[None] | None"]
StatusCallback = Callable[[Status], "Awaitable[None] | None"]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a client talks to: the platform's base URL (HTTP) and the websocket URL."""

    base_url: str
    live_url: str

    @staticmethod
    def from_url(url: str) -> Endpoints:
        """From the platform's address (``http(s)://host[:port]``; ``ws(s)://`` also accepted)."""
        parts = urlsplit(url)
        scheme = {"http": "http", "ws": "http", "https": "https", "wss": "https"}.get(parts.scheme)
        if scheme is None or not parts.netloc:
            raise ValueError(f"url: expected http(s)://host[:port], got {url!r}")
        base = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        live = urlunsplit(("wss" if scheme == "https" else "ws", parts.netloc,
                           parts.path.rstrip("/") + LIVE_PATH, "", ""))
        return Endpoints(base, live)


def parse_environment(environment: str) -> tuple[str, str]:
    """``"<project>/<environment>"`` split in two (``ValueError`` otherwise)."""
    project, _, env = environment.partition("/")
    if not project or not env or "/" in env:
        raise ValueError(f"environment: expected '<project>/<environment>', got {environment!r}")
    return project, env


_NOT_READY = Reason.error(ErrorKind.CLIENT_NOT_READY)
_NOT_FOUND = Reason.error(ErrorKind.FLAG_NOT_FOUND)
_EXCEPTION = Reason.error(ErrorKind.EXCEPTION)


class ClientCore:
    """The state of one client: cache, evaluation counts, listeners and status."""

    def __init__(self, environment: str, *,
                 bootstrap: Mapping[str, Any] | str | Path | None = None,
                 offline: bool = False, count_evaluations: bool = True) -> None:
        self.environment = environment
        self.project, self.env = parse_environment(environment)
        self.store = FlagStore()
        self.counter = EvaluationCounter() if count_evaluations else None
        self.offline = offline
        self._status = Status(ClientState.OFFLINE if offline else ClientState.INITIALIZING,
                              "offline mode" if offline else "connecting", None)
        self._change_listeners: list[tuple[str | None, ChangeCallback]] = []
        self._status_listeners: list[StatusCallback] = []
        self._batch_listeners: list[Callable[[list[FlagChange]], None]] = []
        self._listeners_lock = threading.Lock()
        self.ready = threading.Event()
        self.schedule: Callable[[Awaitable[None]], None] | None = None
        """Set by the asyncio flavour: runs an awaitable a listener returned."""
        if bootstrap is not None:
            flags, segments = load_bootstrap(bootstrap)
            self.store.replace(None, flags, segments)
        if offline:
            self.ready.set()

    # -- status -----------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """The current state, why, and the revision held."""
        return self._status

    def set_state(self, state: ClientState, message: str) -> None:
        """Move to ``state`` (and tell the status listeners when it changed)."""
        old = self._status
        if old.state is ClientState.CLOSED or (old.state is state and old.message == message):
            return
        self._status = status = Status(state, message, self.store.revision)
        if state is ClientState.READY:
            self.ready.set()
        if state is not old.state:
            level = logging.WARNING if state in (ClientState.STALE, ClientState.ERROR) \
                else logging.INFO
            log.log(level, "flagstaff %s: %s (%s)", self.environment, state.value, message)
            with self._listeners_lock:
                listeners = list(self._status_listeners)
            for callback in listeners:
                self._call(callback, status)

    # -- listeners --------------------------------------------------------------------------

    def on_change(self, callback: ChangeCallback, flag_key: str | None = None,
                  ) -> Callable[[], None]:
        """Call ``callback(FlagChange)`` when ``flag_key`` (or any flag) changes; returns a
        function that removes the listener."""
        entry = (flag_key, callback)
        with self._listeners_lock:
            self._change_listeners.append(entry)

        def remove() -> None:
            with self._listeners_lock:
                if entry in self._change_listeners:
                    self._change_listeners.remove(entry)

        return remove

    def on_status(self, callback: StatusCallback) -> Callable[[], None]:
        """Call ``callback(Status)`` on every state change; returns a remover."""
        with self._listeners_lock:
            self._status_listeners.append(callback)

        def remove() -> None:
            with self._listeners_lock:
                if callback in self._status_listeners:
                    self._status_listeners.remove(callback)

        return remove

    def on_changes(self, callback: Callable[[list[FlagChange]], None]) -> Callable[[], None]:
        """Call ``callback(changes)`` once per update (a revision, a snapshot) with every flag
        it changed; returns a remover. (The OpenFeature provider's one event per update.)"""
        with self._listeners_lock:
            self._batch_listeners.append(callback)

        def remove() -> None:
            with self._listeners_lock:
                if callback in self._batch_listeners:
                    self._batch_listeners.remove(callback)

        return remove

    def emit_changes(self, keys: set[str], revision: int | None) -> None:
        """Tell the change listeners about ``keys`` (sorted, one call per flag)."""
        if not keys:
            return
        with self._listeners_lock:
            listeners = list(self._change_listeners)
            batch_listeners = list(self._batch_listeners)
        if not listeners and not batch_listeners:
            return
        data = self.store.data
        flags = data.flags if data is not None else {}
        changes = [FlagChange(key, revision, key not in flags) for key in sorted(keys)]
        for change in changes:
            for wanted, callback in listeners:
                if wanted is None or wanted == change.key:
                    self._call(callback, change)
        for batch in batch_listeners:
            self._call(batch, changes)

    def _call(self, callback: Callable[[Any], Any], argument: Any) -> None:
        try:
            outcome = callback(argument)
            if inspect.isawaitable(outcome):
                if self.schedule is not None:
                    self.schedule(outcome)
                else:
                    log.warning("flagstaff: a listener returned an awaitable; use AsyncClient")
                    if inspect.iscoroutine(outcome):
                        outcome.close()
        except Exception:
            log.exception("flagstaff: a listener raised")

    # -- evaluation -------------------------------------------------------------------------

    def evaluate(self, flag_key: str, context: object, default: Any,
                 expected_kind: FlagKind | str | None = None) -> EvaluationResult:
        """The engine's result for the flag (never raises; ERROR results carry ``default``)."""
        try:
            data = self.store.data
            if data is None:
                return EvaluationResult(default, None, _NOT_READY)
            flag = data.flags.get(flag_key)
            if flag is None:
                return EvaluationResult(default, None, _NOT_FOUND)
            counter = self.counter
            if counter is not None:
                counter.add(flag_key)
            return flag.evaluate(context, data.segments, default=default,
                                 expected_kind=expected_kind)
        except Exception:
            log.exception("flagstaff: evaluation of %r failed", flag_key)
            return EvaluationResult(default, None, _EXCEPTION)

    def detail(self, flag_key: str, context: object, default: Any,
               expected_kind: FlagKind | str | None = None) -> EvaluationDetail:
        """``evaluate`` as an ``EvaluationDetail`` (with the staleness flag)."""
        result = self.evaluate(flag_key, context, default, expected_kind)
        return EvaluationDetail(result.value, result.variation_index, result.reason,
                                self._status.state is not ClientState.READY)

    def all_flags(self, context: object) -> dict[str, Any]:
        """Every flag's value for ``context`` (flags in error are left out)."""
        try:
            data = self.store.data
            if data is None:
                return {}
            out: dict[str, Any] = {}
            for key, flag in data.flags.items():
                result = flag.evaluate(context, data.segments)
                if not result.is_error:
                    out[key] = result.value
            return out
        except Exception:
            log.exception("flagstaff: all_flags failed")
            return {}


class Evaluations:
    """The evaluation and listener methods of both client flavours (over ``self.core``)."""

    core: ClientCore

    def variation(self, flag_key: str, context: object, default: Any) -> Any:
        """The flag's value for ``context``; ``default`` if anything is wrong. Never raises."""
        return self.core.evaluate(flag_key, context, default).value

    def variation_detail(self, flag_key: str, context: object, default: Any, *,
                         kind: FlagKind | str | None = None) -> EvaluationDetail:
        """The value with its variation index and reason (ERROR reasons say what went wrong);
        ``kind`` (``"boolean"``...) makes a flag of another kind an ERROR WRONG_TYPE."""
        return self.core.detail(flag_key, context, default, kind)

    def bool_variation(self, flag_key: str, context: object, default: bool) -> bool:
        """A boolean flag's value (``default`` with ERROR WRONG_TYPE for other kinds)."""
        return bool(self.core.evaluate(flag_key, context, default, FlagKind.BOOLEAN).value)

    def string_variation(self, flag_key: str, context: object, default: str) -> str:
        """A string flag's value."""
        return str(self.core.evaluate(flag_key, context, default, FlagKind.STRING).value)

    def number_variation(self, flag_key: str, context: object, default: float) -> float:
        """A number flag's value."""
        value = self.core.evaluate(flag_key, context, default, FlagKind.NUMBER).value
        return value if isinstance(value, (int, float)) else default

    def json_variation(self, flag_key: str, context: object, default: Any) -> Any:
        """Any flag's value as JSON (objects and lists are fresh copies)."""
        return self.core.evaluate(flag_key, context, default, FlagKind.JSON).value

    def all_flags(self, context: object) -> dict[str, Any]:
        """Every flag's value for ``context`` (flags in error left out)."""
        return self.core.all_flags(context)

    def on_change(self, callback: ChangeCallback, flag_key: str | None = None,
                  ) -> Callable[[], None]:
        """Call ``callback(FlagChange)`` when ``flag_key`` (or, with None, any flag) may have
        changed; a coroutine function is awaited as a task. Returns a remover."""
        return self.core.on_change(callback, flag_key)

    def on_status(self, callback: StatusCallback) -> Callable[[], None]:
        """Call ``callback(Status)`` on every state change (READY, STALE, ...). Returns a remover."""
        return self.core.on_status(callback)

    def export(self) -> dict[str, Any]:
        """The cache as bootstrap data for a later offline or cold start."""
        return self.core.store.export()
