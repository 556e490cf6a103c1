"""The SDK client's connection state and the status it reports to the application."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ClientState(StrEnum):
    """Where a client stands with respect to the platform.

    - ``INITIALIZING``: no snapshot received yet (bootstrap data, if any, is served);
    - ``READY``: subscribed and streaming: values are current;
    - ``STALE``: the stream is down or silent; the last known values are served
      while the client reconnects;
    - ``OFFLINE``: offline mode: bootstrap data only, never connects;
    - ``ERROR``: the platform refused the key or the environment (values as for STALE);
    - ``CLOSED``: ``close()`` was called.
    """

    INITIALIZING = "INITIALIZING"
    READY = "READY"
    STALE = "STALE"
    OFFLINE = "OFFLINE"
    ERROR = "ERROR"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Status:
    """A state change of a client: the new state, why, and the revision the client holds."""

    state: ClientState
    message: str
    revision: int | None
