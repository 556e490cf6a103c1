"""The values the key space hands out: key-value versions and watch events.

These mirror etcd's ``mvccpb.KeyValue`` and ``mvccpb.Event`` field for field,
as plain immutable Python values; the gRPC layer copies them into protobuf
messages. Because they are immutable, the store hands out the very objects it
keeps in its history (no copies on the read path).

They are named tuples rather than dataclasses for speed at millions of
versions: they are cheaper to build, and a tuple holding only bytes and ints
is dropped from the cyclic garbage collector's tracking, so a large history
does not slow down every full collection.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class KeyValue(NamedTuple):
    """One version of a key, as etcd's ``mvccpb.KeyValue``.

    A *tombstone* (the record of a deletion) is a KeyValue with ``version == 0``,
    ``create_revision == 0``, empty value, no lease and ``mod_revision`` set to
    the revision of the deletion: exactly the ``kv`` of etcd's DELETE event.
    """

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes = b""
    lease: int = 0

    @property
    def is_tombstone(self) -> bool:
        """Whether this version records a deletion."""
        return self.version == 0


class EventType(enum.IntEnum):
    """What happened to a key (``mvccpb.Event.EventType``)."""

    PUT = 0
    DELETE = 1


class Event(NamedTuple):
    """One change to one key at one revision (``mvccpb.Event``).

    ``kv`` is the new version (for a DELETE, the tombstone: key and
    ``mod_revision`` only). ``prev_kv`` is the version it replaced, or None when
    the key did not exist before or that version has been compacted away.
    """

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        """The main revision the change was made at."""
        return self.kv.mod_revision
