"""The server messages of the live-updates protocol as the SDK reads them, checked field by field.

``docs/websocket-protocol.md`` is the specification. A message that does not
have the shape the protocol promises raises ``MalformedMessage``; the stream
logs it and carries on (a server bug or a proxy mangling frames must not crash
the application, nor corrupt the cache).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any


class MalformedMessage(ValueError):
    """A server message that is not what the protocol says; ignored after logging."""


@dataclass(frozen=True, slots=True)
class Change:
    """One put or delete of a flag or segment within an ``event``."""

    op: str  # "put" | "delete"
    kind: str  # "flag" | "segment"
    name: str
    doc: Any


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The full state of the environment at ``revision``: replaces the cache."""

    revision: int
    flags: dict[str, Any]
    segments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """Every change of one revision."""

    revision: int
    changes: tuple[Change, ...]
    actor: str | None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The catch-up is over; live events follow."""

    mode: str
    revision: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The subscription is alive and the client holds everything up to ``revision``."""

    revision: int


@dataclass(frozen=True, slots=True)
class ServerError:
    """A refused request (``bad_request``, ``not_found``, ``unavailable``...)."""

    code: str
    message: str


Message = Snapshot | Event | Subscribed | Heartbeat | ServerError


def _revision(content: dict[str, Any]) -> int:
    revision = content.get("revision")
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 0:
        raise MalformedMessage("revision: must be a non-negative integer")
    return revision


def _documents(content: dict[str, Any], field: str) -> dict[str, Any]:
    value = content.get(field)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MalformedMessage(f"{field}: must be an object of documents")
    return value


def _change(raw: Any) -> Change:
    if not isinstance(raw, dict):
        raise MalformedMessage("changes: entries must be objects")
    op, kind = raw.get("op"), raw.get("kind")
    if op not in ("put", "delete"):
        raise MalformedMessage("changes: op must be put or delete")
    if kind not in ("flag", "segment"):
        raise MalformedMessage("changes: kind must be flag or segment")
    name = raw.get(kind)
    if not isinstance(name, str) or not name:
        raise MalformedMessage(f"changes: {kind} must name the {kind}")
    return Change(op, kind, name, raw.get("doc") if op == "put" else None)


@functools.lru_cache(maxsize=256)
def parse(text: str | bytes, project: str, environment: str) -> Message | None:
    """The message in a websocket frame; None for a well-formed message of another
    environment or of a type this SDK does not know (newer servers may add some).

    Memoised on the frame (messages are immutable; every client of an environment
    in a process receives the same frames). The documents inside are shared:
    treat them as read-only.
    """
    try:
        content = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(content, dict):
        raise MalformedMessage("a message must be a JSON object")
    kind = content.get("type")
    if kind == "error":
        code, message = content.get("code"), content.get("message")
        if not isinstance(code, str):
            raise MalformedMessage("error: code must be a string")
        if "project" in content and (content.get("project"), content.get("environment")) != (
                project, environment):
            return None
        return ServerError(code, message if isinstance(message, str) else "")
    if kind not in ("snapshot", "event", "subscribed", "heartbeat"):
        if isinstance(kind, str):
            return None
        raise MalformedMessage("type: missing")
    if (content.get("project"), content.get("environment")) != (project, environment):
        if isinstance(content.get("project"), str) and isinstance(content.get("environment"), str):
            return None
        raise MalformedMessage("project and environment: missing")
    revision = _revision(content)
    if kind == "snapshot":
        return Snapshot(revision, _documents(content, "flags"), _documents(content, "segments"))
    if kind == "event":
        changes = content.get("changes")
        if not isinstance(changes, list):
            raise MalformedMessage("changes: must be a list")
        actor = content.get("actor")
        return Event(revision, tuple(_change(c) for c in changes),
                     actor if isinstance(actor, str) else None)
    if kind == "subscribed":
        mode = content.get("mode")
        return Subscribed(mode if isinstance(mode, str) else "", revision)
    return Heartbeat(revision)


def subscribe(project: str, environment: str, since_revision: int | None) -> str:
    """The ``subscribe`` message: from a snapshot (None) or resuming after a revision."""
    return json.dumps({"type": "subscribe", "project": project, "environment": environment,
                       "since_revision": since_revision})
