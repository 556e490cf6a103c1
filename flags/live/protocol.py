"""The live-updates websocket protocol: message shapes, parsing and key classification.

Everything that decides what goes over the wire lives here, so that the
consumer and the relay agree on it and ``docs/websocket-protocol.md`` has one
module to match. Messages are JSON objects with a ``type``:

client -> server: ``subscribe``, ``unsubscribe``;
server -> client: ``subscribed``, ``snapshot``, ``event``, ``heartbeat``, ``error``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flags import keyspace

PROTOCOL_VERSION = 1

ERROR_BAD_REQUEST = "bad_request"
ERROR_FORBIDDEN = "forbidden"
ERROR_NOT_FOUND = "not_found"
ERROR_UNAVAILABLE = "unavailable"


class ProtocolError(Exception):
    """A client message the server cannot act on; becomes an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """A parsed ``subscribe`` (or ``unsubscribe``) message."""

    project: str
    environment: str
    since_revision: int | None


def parse_subscription(content: Any) -> SubscribeRequest:
    """The subscription a ``subscribe``/``unsubscribe`` message names (``ProtocolError`` if invalid)."""
    if not isinstance(content, dict):
        raise ProtocolError(ERROR_BAD_REQUEST, "a message must be a JSON object")
    project, environment = content.get("project"), content.get("environment")
    if not keyspace.is_key(project):
        raise ProtocolError(ERROR_BAD_REQUEST, "project: must be a project key")
    if not keyspace.is_key(environment):
        raise ProtocolError(ERROR_BAD_REQUEST, "environment: must be an environment key")
    since = content.get("since_revision")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        raise ProtocolError(ERROR_BAD_REQUEST, "since_revision: must be a non-negative integer or null")
    return SubscribeRequest(str(project), str(environment), since)


@dataclass(frozen=True, slots=True)
class KeyPlace:
    """Where a core key belongs: its (project, environment), and whether it is a flag or segment."""

    project: str
    environment: str
    kind: str  # "flag" | "segment"
    name: str


def classify(key: str) -> KeyPlace | None:
    """The place of a ``/flags/<p>/<e>/<f>`` or ``/segments/<p>/<e>/<s>`` key; None for other keys."""
    for prefix, kind in ((keyspace.FLAGS, "flag"), (keyspace.SEGMENTS, "segment")):
        if key.startswith(prefix):
            parts = key[len(prefix):].split("/")
            if len(parts) == 3 and all(keyspace.is_key(p) for p in parts):
                return KeyPlace(parts[0], parts[1], kind, parts[2])
            return None
    return None


def decode_document(value: bytes) -> Any:
    """A stored flag/segment document parsed from JSON (None if it is not JSON)."""
    try:
        return json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def change(op: str, key: str, place: KeyPlace, doc: Any) -> dict[str, Any]:
    """One entry of an ``event``'s ``changes``: ``op`` is ``put`` or ``delete`` (doc None)."""
    return {"op": op, "key": key, "kind": place.kind, place.kind: place.name, "doc": doc}


def snapshot_message(
    project: str, environment: str, revision: int,
    flags: dict[str, Any], segments: dict[str, Any],
) -> dict[str, Any]:
    """The full state of an environment at ``revision``: replaces whatever the client held."""
    return {"type": "snapshot", "project": project, "environment": environment,
            "revision": revision, "flags": flags, "segments": segments}


def event_message(
    project: str, environment: str, revision: int, changes: list[dict[str, Any]],
    actor: str | None = None,
) -> dict[str, Any]:
    """Every change of one revision in one environment."""
    return {"type": "event", "project": project, "environment": environment,
            "revision": revision, "changes": changes, "actor": actor}


def heartbeat_message(project: str, environment: str, revision: int) -> dict[str, Any]:
    """Liveness: the subscription is up and the client holds everything up to ``revision``."""
    return {"type": "heartbeat", "project": project, "environment": environment,
            "revision": revision}


def subscribed_message(project: str, environment: str, mode: str, revision: int) -> dict[str, Any]:
    """Sent after the snapshot or the replayed events: the subscription is live from ``revision``."""
    return {"type": "subscribed", "project": project, "environment": environment,
            "mode": mode, "revision": revision}


def error_message(code: str, message: str, project: str | None = None,
                  environment: str | None = None) -> dict[str, Any]:
    """A refused request; the connection stays open unless the server closes it."""
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if project is not None:
        out["project"] = project
        out["environment"] = environment
    return out
