"""The audit trail: one record per applied mutation, kept beside (not in) the key space.

The state machine appends an :class:`AuditRecord` in the same apply as the
change it describes (so no change exists without its record): its revision,
the proposing member's time carried in the entry, the authenticated core
principal, the on-behalf-of actor, reason and source the platform passed,
the action and the changed keys with their before and after versions (the
very ``Event`` values the watch hub gets: nothing is copied or encoded on the
apply path). Platform events (logins, permission changes...) are records with
no changes, appended through Raft like everything else.

The trail is not part of the key space: Range never shows it, it takes no
revision of its own and HashKV does not cover it. It is replicated state all
the same -- members agree on it record for record, it is written into the
state machine's snapshot (:meth:`AuditLog.to_bytes`) and rebuilt by replaying
the log after a restart. Records leave only through :meth:`AuditLog.purge`
(retention, proposed by the leader with the cutoff in the entry).

Pure and deterministic: no clock, no randomness, no I/O.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from typing import NamedTuple

from consensus.mvcc.errors import SnapshotError
from consensus.mvcc.kv import Event, EventType, KeyValue

ANONYMOUS = "anonymous"
"""The principal recorded when core auth is off (no authenticated user)."""

DEFAULT_SOURCE = "grpc"
"""The source recorded when the request carried no ``flagstaff-source``."""

KV_ACTIONS = frozenset({"put", "delete", "txn", "lease_revoke", "lease_expire"})
"""The actions the core records for key changes; platform events may not use them."""


class AuditRecord(NamedTuple):
    """One entry of the audit trail.

    ``id`` numbers records from 1 in apply order (every member alike);
    ``revision`` is the key-space revision the change made (for a platform
    event: the revision current when it was applied); ``time_ms`` is the
    proposing member's wall clock in Unix milliseconds; ``events`` are the
    key changes in sub-revision order (each with ``prev_kv`` as the before
    version); ``key`` names the subject of a platform event and ``detail`` is
    its JSON text (both empty for key changes).
    """

    id: int
    revision: int
    time_ms: int
    principal: str
    actor: str
    reason: str
    source: str
    action: str
    events: tuple[Event, ...] = ()
    key: bytes = b""
    detail: str = ""

    def subject_keys(self) -> Iterator[bytes]:
        """The keys this record is about (its changed keys, or a platform event's subject)."""
        if self.events:
            for event in self.events:
                yield event.kv.key
        elif self.key:
            yield self.key


def before_of(event: Event) -> KeyValue | None:
    """The version a change replaced, or None when the key did not exist."""
    prev = event.prev_kv
    return None if prev is None or prev.is_tombstone else prev


def after_of(event: Event) -> KeyValue | None:
    """The version a change wrote, or None for a deletion."""
    return event.kv if event.type == EventType.PUT else None


AuditListener = Callable[[AuditRecord], None]


class AuditLog:
    """Every retained audit record, in id order, and the next id to give.

    Invariants: ``records`` ids strictly increase and are all below ``next_id``.
    """

    __slots__ = ("_listeners", "_reset_listeners", "next_id", "records")

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.next_id = 1
        self._listeners: list[AuditListener] = []
        self._reset_listeners: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self.records)

    # -- writes (apply only) ----------------------------------------------------------------
    def append(
        self,
        revision: int,
        time_ms: int,
        principal: str,
        actor: str,
        reason: str,
        source: str,
        action: str,
        events: tuple[Event, ...] = (),
        key: bytes = b"",
        detail: str = "",
    ) -> AuditRecord:
        """Add the next record and tell the listeners (watchers) about it."""
        record = AuditRecord(
            self.next_id, revision, time_ms, principal or ANONYMOUS, actor, reason,
            source or DEFAULT_SOURCE, action, events, key, detail,
        )
        self.next_id += 1
        self.records.append(record)
        for listener in self._listeners:
            listener(record)
        return record

    def adopt(self, other: AuditLog) -> None:
        """Take over ``other``'s records (a snapshot install); listeners stay and are told."""
        self.records = other.records
        self.next_id = other.next_id
        for listener in list(self._reset_listeners):
            listener()

    def purge(self, cutoff_ms: int) -> int:
        """Drop every record whose time is before ``cutoff_ms``; how many went.

        Members' clocks may disagree a little, so times are not sorted by id:
        every record is looked at, and only the old ones go.
        """
        kept = [r for r in self.records if r.time_ms >= cutoff_ms]
        removed = len(self.records) - len(kept)
        if removed:
            self.records = kept
        return removed

    # -- reads -------------------------------------------------------------------------------
    def subscribe(
        self, listener: AuditListener, on_reset: Callable[[], None] | None = None
    ) -> Callable[[], None]:
        """Call ``listener(record)`` after each appended record, and ``on_reset()`` after
        :meth:`adopt`; returns an unsubscribe."""
        self._listeners.append(listener)
        if on_reset is not None:
            self._reset_listeners.append(on_reset)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
            if on_reset is not None and on_reset in self._reset_listeners:
                self._reset_listeners.remove(on_reset)

        return unsubscribe

    def newest_first(self, before_id: int = 0) -> Iterator[AuditRecord]:
        """Records newest first, starting below ``before_id`` (0: from the newest)."""
        records = self.records
        end = len(records) if before_id <= 0 else bisect_left(records, before_id, key=_id)
        for i in range(end - 1, -1, -1):
            yield records[i]

    def since(self, after_id: int = 0, min_revision: int = 0) -> list[AuditRecord]:
        """Records after ``after_id`` with a revision of at least ``min_revision``, oldest first."""
        records = self.records
        start = bisect_right(records, after_id, key=_id)
        if min_revision > 0:
            start = max(start, bisect_left(records, min_revision, key=_revision))
        return records[start:]

    # -- snapshot ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole trail, deterministically encoded (see :func:`decode`)."""
        out = bytearray(_HEAD.pack(_FORMAT, self.next_id, len(self.records)))
        for r in self.records:
            out += _REC.pack(r.id, r.revision, r.time_ms, len(r.events))
            for text in (r.principal, r.actor, r.reason, r.source, r.action, r.detail):
                _put_bytes(out, text.encode())
            _put_bytes(out, r.key)
            for event in r.events:
                out += _U8.pack(int(event.type))
                _put_kv(out, event.kv)
                if event.prev_kv is None:
                    out += _U8.pack(0)
                else:
                    out += _U8.pack(1)
                    _put_kv(out, event.prev_kv)
        return bytes(out)

    @staticmethod
    def from_bytes(data: bytes) -> AuditLog:
        """The trail :meth:`to_bytes` encoded; raises ``SnapshotError`` if malformed."""
        try:
            return _decode(data)
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
            raise SnapshotError(f"corrupt audit trail in snapshot: {exc}") from None


def _id(record: AuditRecord) -> int:
    return record.id


def _revision(record: AuditRecord) -> int:
    return record.revision


# -- the encoding: little endian; u32-length-prefixed byte strings ------------------------------
_FORMAT = 1
_HEAD = struct.Struct("<HQQ")
"""format, next id, record count."""
_REC = struct.Struct("<QqqI")
"""id, revision, time_ms, event count; then principal, actor, reason, source, action, detail, key."""
_KV = struct.Struct("<qqqq")
"""create revision, mod revision, version, lease; then key and value."""
_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")


def _put_bytes(out: bytearray, raw: bytes) -> None:
    out += _U32.pack(len(raw))
    out += raw


def _put_kv(out: bytearray, kv: KeyValue) -> None:
    out += _KV.pack(kv.create_revision, kv.mod_revision, kv.version, kv.lease)
    _put_bytes(out, kv.key)
    _put_bytes(out, kv.value)


class _Reader:
    """A cursor over the encoded bytes."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, s: struct.Struct) -> tuple[int, ...]:
        values = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return tuple(values)

    def bytes(self) -> bytes:
        (n,) = self.unpack(_U32)
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw

    def kv(self) -> KeyValue:
        create, mod, version, lease = self.unpack(_KV)
        key = self.bytes()
        return KeyValue(key, create, mod, version, self.bytes(), lease)


def _decode(data: bytes) -> AuditLog:
    r = _Reader(data)
    fmt, next_id, count = r.unpack(_HEAD)
    if fmt != _FORMAT:
        raise ValueError(f"unknown audit format {fmt}")
    log = AuditLog()
    log.next_id = next_id
    for _ in range(count):
        rid, revision, time_ms, n_events = r.unpack(_REC)
        principal, actor, reason, source, action, detail = (r.bytes().decode() for _ in range(6))
        key = r.bytes()
        events: list[Event] = []
        for _ in range(n_events):
            (kind,) = r.unpack(_U8)
            kv = r.kv()
            (has_prev,) = r.unpack(_U8)
            events.append(Event(EventType(kind), kv, r.kv() if has_prev else None))
        log.records.append(
            AuditRecord(rid, revision, time_ms, principal, actor, reason, source, action,
                        tuple(events), key, detail)
        )
    if r.pos != len(data):
        raise ValueError("trailing bytes")
    return log
