"""The records the platform keeps in the core, as typed values read back from it.

Each record carries ``revision``, the core's mod revision of its key: the
version an editor loaded and must send back (``expected_revision``) to save.
Project and environment records are small JSON objects (``to_document``);
flags and segments are ``flags.engine`` documents kept as the parsed JSON.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flags import keyspace
from flags.core import Entry


def now_iso() -> str:
    """The current time as the documents' RFC 3339 timestamps (UTC, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_object(entry: Entry) -> dict[str, Any]:
    """The entry's JSON object; a value someone else wrote that is not one reads as ``{}``."""
    try:
        value = entry.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Project:
    """A project: a named set of environments sharing its flags' keys (``/projects/<key>``)."""

    key: str
    name: str
    description: str
    created_at: str
    updated_at: str
    revision: int = 0
    updated_by: str = ""
    """Who made the last change (``user:<name>``, ``system:<component>``); "" if unknown."""

    def to_document(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by or None,
        }

    @classmethod
    def from_entry(cls, entry: Entry) -> Project:
        doc = _as_object(entry)
        return cls(
            key=keyspace.last_segment(entry.key),
            name=_text(doc.get("name")),
            description=_text(doc.get("description")),
            created_at=_text(doc.get("created_at")),
            updated_at=_text(doc.get("updated_at")),
            revision=entry.revision,
            updated_by=_text(doc.get("updated_by")),
        )


@dataclass(frozen=True, slots=True)
class Environment:
    """An environment of a project (``/environments/<project>/<key>``): one copy of every flag."""

    project: str
    key: str
    name: str
    description: str
    created_at: str
    updated_at: str
    revision: int = 0
    updated_by: str = ""
    """Who made the last change (``user:<name>``, ``system:<component>``); "" if unknown."""

    def to_document(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by or None,
        }

    @classmethod
    def from_entry(cls, entry: Entry) -> Environment:
        doc = _as_object(entry)
        project, key = entry.key[len(keyspace.ENVIRONMENTS):].split("/", 1)
        return cls(
            project=project,
            key=key,
            name=_text(doc.get("name")),
            description=_text(doc.get("description")),
            created_at=_text(doc.get("created_at")),
            updated_at=_text(doc.get("updated_at")),
            revision=entry.revision,
            updated_by=_text(doc.get("updated_by")),
        )


@dataclass(frozen=True, slots=True)
class FlagState:
    """One flag in one environment: its document as stored and the revision it was read at.

    ``document`` is whatever JSON the key holds (``{}`` if it is not a JSON
    object: someone wrote it with etcdctl); ``valid`` tells whether the engine
    accepts it.
    """

    project: str
    environment: str
    key: str
    document: dict[str, Any]
    revision: int

    @property
    def core_key(self) -> str:
        return keyspace.flag_key(self.project, self.environment, self.key)

    @property
    def on(self) -> bool:
        return self.document.get("on") is True

    @property
    def name(self) -> str:
        return _text(self.document.get("name"))

    @property
    def tags(self) -> list[str]:
        tags = self.document.get("tags")
        return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []

    @classmethod
    def from_entry(cls, entry: Entry) -> FlagState:
        parts = keyspace.split_flag_key(entry.key)
        if parts is None:
            raise ValueError(f"{entry.key!r} is not a flag key")
        return cls(parts[0], parts[1], parts[2], _as_object(entry), entry.revision)


@dataclass(frozen=True, slots=True)
class FlagOverview:
    """One flag across a project's environments (``states`` by environment key; absent = missing there)."""

    project: str
    key: str
    states: dict[str, FlagState] = field(default_factory=dict)

    @property
    def primary(self) -> FlagState:
        """The state whose name, kind and tags describe the flag (the first environment's)."""
        return next(iter(self.states.values()))


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment in one environment (``/segments/<project>/<environment>/<key>``)."""

    project: str
    environment: str
    key: str
    document: dict[str, Any]
    revision: int

    @classmethod
    def from_entry(cls, entry: Entry) -> Segment:
        project, environment, key = entry.key[len(keyspace.SEGMENTS):].split("/", 2)
        return cls(project, environment, key, _as_object(entry), entry.revision)


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One config key (``/config/<path>``): text when the value is UTF-8, else base64."""

    path: str
    value: str
    encoding: str
    revision: int
    version: int

    @classmethod
    def from_entry(cls, entry: Entry) -> ConfigEntry:
        try:
            value, encoding = entry.value.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            value, encoding = base64.b64encode(entry.value).decode("ascii"), "base64"
        return cls(entry.key[len(keyspace.CONFIG):], value, encoding, entry.revision, entry.version)
