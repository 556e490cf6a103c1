"""The audit trail: one record per applied mutation, kept beside (not in) the key space.

The state machine appends an :class:`AuditRecord` in the same apply as the
change it describes (so no change exists without its record): its revision,
the proposing member's time carried in the entry, the authenticated core
principal, the on-behalf-of actor, reason and source the platform passed,
the action and the changed keys with their before and after values (the
stored ``bytes`` objects themselves: nothing is copied or encoded on the apply
path). Platform events (logins, permission changes...) are records with no
changes, appended through Raft like everything else.

Records are kept as plain tuples of ints, strings and bytes (``_Row``), which
the cyclic garbage collector stops tracking after their first collection: a
long trail costs memory but no collector time. Readers get
:class:`AuditRecord` views built on demand.

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
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate, pairwise
from typing import NamedTuple

from consensus.mvcc.errors import SnapshotError
from consensus.mvcc.kv import Event, EventType

ANONYMOUS = "anonymous"
"""The principal recorded when core auth is off (no authenticated user)."""

DEFAULT_SOURCE = "grpc"
"""The source recorded when the request carried no ``flagstaff-source``."""

KV_ACTIONS = frozenset({"put", "delete", "txn", "lease_revoke", "lease_expire"})
"""The actions the core records for key changes; platform events may not use them."""


class Change(NamedTuple):
    """One changed key: its value before (None: it did not exist) and after (None: deleted)."""

    key: bytes
    before: bytes | None
    before_mod_revision: int
    after: bytes | None
    after_version: int
    lease: int


class AuditRecord(NamedTuple):
    """One entry of the audit trail (a view; the log keeps plain tuples).

    ``id`` numbers records from 1 in apply order (every member alike);
    ``revision`` is the key-space revision the change made (for a platform
    event: the revision current when it was applied); ``time_ms`` is the
    proposing member's wall clock in Unix milliseconds; ``changes`` are the
    changed keys in sub-revision order; ``key`` names the subject of a
    platform event and ``detail`` is its JSON text (both empty for key changes).
    """

    id: int
    revision: int
    time_ms: int
    principal: str
    actor: str
    reason: str
    source: str
    action: str
    changes: tuple[Change, ...] = ()
    key: bytes = b""
    detail: str = ""

    def subject_keys(self) -> Iterator[bytes]:
        """The keys this record is about (its changed keys, or a platform event's subject)."""
        if self.changes:
            for change in self.changes:
                yield change.key
        elif self.key:
            yield self.key


_RawChange = tuple[bytes, bytes | None, int, bytes | None, int, int]
_Row = tuple[int, int, int, str, str, str, str, str, tuple[_RawChange, ...], bytes, str]
"""An exact tuple (untracked by the garbage collector once it has seen it): a record's fields."""

_PUT = EventType.PUT


def _raw_changes(events: tuple[Event, ...]) -> tuple[_RawChange, ...]:
    out: list[_RawChange] = []
    for event in events:
        kv = event.kv
        prev = event.prev_kv
        if prev is not None and prev.version == 0:  # a tombstone: the key did not exist
            prev = None
        if event.type is _PUT:
            after: bytes | None = kv.value
            version, lease = kv.version, kv.lease
        else:
            after, version, lease = None, 0, 0
        if prev is None:
            out.append((kv.key, None, 0, after, version, lease))
        else:
            out.append((kv.key, prev.value, prev.mod_revision, after, version, lease))
    return tuple(out)


def _view(row: _Row) -> AuditRecord:
    return AuditRecord(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
        tuple([Change(*c) for c in row[8]]), row[9], row[10],
    )


AuditListener = Callable[[], None]
"""Told that records were appended (it reads them itself: nothing is built for it)."""


class AuditLog:
    """Every retained audit record, in id order, and the next id to give.

    Invariants: row ids strictly increase and are all below ``next_id``;
    revisions never decrease along the rows.
    """

    __slots__ = ("_listeners", "_reset_listeners", "_rows", "next_id")

    def __init__(self) -> None:
        self._rows: list[_Row] = []
        self.next_id = 1
        self._listeners: list[AuditListener] = []
        self._reset_listeners: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def records(self) -> list[AuditRecord]:
        """Every record, oldest first (built now: for tests and small trails)."""
        return [_view(row) for row in self._rows]

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
    ) -> int:
        """Add the next record (telling the listeners, if any); its id."""
        record_id = self.next_id
        self.next_id = record_id + 1
        row: _Row = (
            record_id, revision, time_ms, principal or ANONYMOUS, actor, reason,
            source or DEFAULT_SOURCE, action, _raw_changes(events) if events else (), key, detail,
        )
        self._rows.append(row)
        for listener in self._listeners:
            listener()
        return record_id

    def adopt(self, other: AuditLog) -> None:
        """Take over ``other``'s records (a snapshot install); listeners stay and are told."""
        self._rows = other._rows
        self.next_id = other.next_id
        for reset in list(self._reset_listeners):
            reset()

    def purge(self, cutoff_ms: int) -> int:
        """Drop every record whose time is before ``cutoff_ms``; how many went.

        Members' clocks may disagree a little, so times are not sorted by id:
        every record is looked at, and only the old ones go.
        """
        kept = [row for row in self._rows if row[2] >= cutoff_ms]
        removed = len(self._rows) - len(kept)
        if removed:
            self._rows = kept
        return removed

    # -- reads -------------------------------------------------------------------------------
    def has_older_than(self, cutoff_ms: int) -> bool:
        """Whether some record's time is before ``cutoff_ms`` (what a purge would drop)."""
        return any(row[2] < cutoff_ms for row in self._rows)

    def subscribe(
        self, listener: AuditListener, on_reset: Callable[[], None] | None = None
    ) -> Callable[[], None]:
        """Call ``listener()`` after each appended record (read them with :meth:`since`),
        and ``on_reset()`` after :meth:`adopt`; returns an unsubscribe."""
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
        rows = self._rows
        end = len(rows) if before_id <= 0 else bisect_left(rows, before_id, key=_id)
        for i in range(end - 1, -1, -1):
            yield _view(rows[i])

    def since(
        self, after_id: int = 0, min_revision: int = 0, limit: int | None = None
    ) -> list[AuditRecord]:
        """Records after ``after_id`` with a revision of at least ``min_revision``, oldest
        first (at most ``limit`` of them)."""
        rows = self._rows
        start = bisect_right(rows, after_id, key=_id)
        if min_revision > 0:
            start = max(start, bisect_left(rows, min_revision, key=_revision))
        end = len(rows) if limit is None else start + limit
        return [_view(row) for row in rows[start:end]]

    # -- snapshot ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole trail, deterministically encoded (columnar; see ``_encode``)."""
        return _encode(self._rows, self.next_id)

    @staticmethod
    def from_bytes(data: bytes) -> AuditLog:
        """The trail :meth:`to_bytes` encoded; raises ``SnapshotError`` if malformed."""
        try:
            rows, next_id = _decode(data)
        except (struct.error, IndexError, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise SnapshotError(f"corrupt audit trail in snapshot: {exc}") from None
        log = AuditLog()
        log._rows = rows
        log.next_id = next_id
        return log


def _id(row: _Row) -> int:
    return row[0]


def _revision(row: _Row) -> int:
    return row[1]


# -- the encoding ---------------------------------------------------------------------------------
# Little endian, columnar (so that most of the work runs in C):
#
#   header   "FSAU", u16 format, u64 next id, u32 records R, u32 strings S, u64 changes C
#   strings  u32[S] lengths, the S distinct UTF-8 strings concatenated (first-use order)
#   records  i64[R] id, i64[R] revision, i64[R] time_ms,
#            u32[R] x 6 string indexes (principal, actor, reason, source, action, detail),
#            u32[R] change counts, u32[R] key lengths + keys concatenated
#   changes  u32[C] key lengths + keys, u8[C] flags (1: has before, 2: has after),
#            u32[C] before lengths + befores, i64[C] before mod revisions,
#            u32[C] after lengths + afters, i64[C] after versions, i64[C] leases
_MAGIC = b"FSAU"
_FORMAT = 2
_HEAD = struct.Struct("<4sHQIIQ")
_BIG_ENDIAN = sys.byteorder == "big"
_U8, _U32, _I64 = "B", "I", "q"
assert array(_U32).itemsize == 4 and array(_I64).itemsize == 8


def _ints(typecode: str, values: Iterable[int]) -> bytes:
    column = array(typecode, values)
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tobytes()


def _blobs(values: list[bytes]) -> list[bytes]:
    return [_ints(_U32, map(len, values)), b"".join(values)]


def _encode(rows: list[_Row], next_id: int) -> bytes:
    table: dict[str, int] = {}  # distinct strings -> index, in first-use order
    texts: list[list[str]] = [
        [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows],
        [r[6] for r in rows], [r[7] for r in rows], [r[10] for r in rows],
    ]
    columns = [[table.setdefault(t, len(table)) for t in column] for column in texts]
    changes = [c for row in rows for c in row[8]]
    parts = [
        _HEAD.pack(_MAGIC, _FORMAT, next_id, len(rows), len(table), len(changes)),
        *_blobs([s.encode() for s in table]),
        _ints(_I64, [row[0] for row in rows]),
        _ints(_I64, [row[1] for row in rows]),
        _ints(_I64, [row[2] for row in rows]),
        *(_ints(_U32, column) for column in columns),
        _ints(_U32, [len(row[8]) for row in rows]),
        *_blobs([row[9] for row in rows]),
        *_blobs([c[0] for c in changes]),
        _ints(_U8, [(c[1] is not None) | (c[3] is not None) << 1 for c in changes]),
        *_blobs([c[1] or b"" for c in changes]),
        _ints(_I64, [c[2] for c in changes]),
        *_blobs([c[3] or b"" for c in changes]),
        _ints(_I64, [c[4] for c in changes]),
        _ints(_I64, [c[5] for c in changes]),
    ]
    return b"".join(parts)


class _Reader:
    """A cursor over the encoded bytes; running past the end raises ValueError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ValueError("truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def ints(self, typecode: str, count: int) -> list[int]:
        column = array(typecode)
        column.frombytes(self.take(count * column.itemsize))
        if _BIG_ENDIAN:
            column.byteswap()
        return column.tolist()

    def blobs(self, count: int) -> list[bytes]:
        lengths = self.ints(_U32, count)
        joined = self.take(sum(lengths))
        ends = list(accumulate(lengths))
        return [joined[end - n : end] for n, end in zip(lengths, ends, strict=True)]


def _decode(data: bytes) -> tuple[list[_Row], int]:
    magic, fmt, next_id, n, n_strings, n_changes = _HEAD.unpack_from(data, 0)
    if magic != _MAGIC or fmt != _FORMAT:
        raise ValueError(f"unknown audit trail format {magic!r} {fmt}")
    r = _Reader(data, _HEAD.size)
    strings = [raw.decode() for raw in r.blobs(n_strings)]
    ids, revisions, times = r.ints(_I64, n), r.ints(_I64, n), r.ints(_I64, n)
    columns = [[strings[i] for i in r.ints(_U32, n)] for _ in range(6)]
    counts = r.ints(_U32, n)
    keys = r.blobs(n)
    c_keys = r.blobs(n_changes)
    flags = r.ints(_U8, n_changes)
    befores = r.blobs(n_changes)
    before_mods = r.ints(_I64, n_changes)
    afters = r.blobs(n_changes)
    versions = r.ints(_I64, n_changes)
    leases = r.ints(_I64, n_changes)
    if r.pos != len(data) or sum(counts) != n_changes:
        raise ValueError("inconsistent lengths")
    changes: list[_RawChange] = [
        (c_keys[i], befores[i] if flags[i] & 1 else None, before_mods[i],
         afters[i] if flags[i] & 2 else None, versions[i], leases[i])
        for i in range(n_changes)
    ]
    principals, actors, reasons, sources, actions, details = columns
    rows: list[_Row] = []
    pos = 0
    for i in range(n):
        end = pos + counts[i]
        rows.append((ids[i], revisions[i], times[i], principals[i], actors[i], reasons[i],
                     sources[i], actions[i], tuple(changes[pos:end]), keys[i], details[i]))
        pos = end
    if any(b <= a for a, b in pairwise(ids)) or (ids and ids[-1] >= next_id):
        raise ValueError("record ids out of order")
    return rows, next_id
