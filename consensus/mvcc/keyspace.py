"""The multi-version key space: every retained version of every key.

Each write appends one immutable ``KeyValue`` (a version, or a tombstone for a
deletion) and the key space indexes it three ways:

- by key: ``_history[key]`` lists the key's versions, oldest first, so a read
  at a past revision is a bisect;
- by revision: ``_changes[main]`` lists the versions written at main revision
  ``main`` in the order they were made: a version's position in that list is
  its etcd *sub* revision. Compaction leaves ``None`` where it drops a version
  from a list it keeps, so positions never shift. This is the event log for
  watches and the order HashKV and snapshots walk;
- in key order: ``_live`` (keys whose latest version is not a tombstone) and
  ``_indexed`` (keys with any retained version) are ``SortedKeys``, so a
  Range over an interval costs O(log n + k).

The key space knows nothing of revision counters, leases or requests: the
store (``store.KVStore``) decides what to write and at which revision.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from consensus.mvcc.keyrange import Interval, contains
from consensus.mvcc.kv import Event, EventType, KeyValue
from consensus.mvcc.sortedkeys import SortedKeys

RECORD_OVERHEAD = 48
"""Bytes counted per retained version on top of its key and value (quota accounting)."""


def _mod(kv: KeyValue) -> int:
    """The bisect key for a key's history: the version's main revision."""
    return kv.mod_revision


def record_size(kv: KeyValue) -> int:
    """The bytes one retained version counts for in ``Keyspace.size_bytes``."""
    return len(kv.key) + len(kv.value) + RECORD_OVERHEAD


class Keyspace:
    """Every retained version of every key, indexed by key, by revision and in key order.

    Invariants:

    - ``_history[k]`` is non-empty and ordered by ``mod_revision`` (equal
      revisions can occur when one txn deletes and re-puts a key, which etcd's
      duplicate-key check lets through in a few shapes; the later one wins);
    - every version is in exactly one ``_history`` list and exactly one
      ``_changes`` list (the one for its ``mod_revision``, at its sub
      revision); ``_changes`` is ordered by revision, and no list in it is
      all ``None``;
    - ``_indexed`` holds exactly the keys of ``_history``; ``_live`` exactly
      those whose last version is not a tombstone;
    - ``_size`` is the sum of ``record_size`` over every retained version.
    """

    __slots__ = ("_changes", "_history", "_indexed", "_live", "_size")

    def __init__(self) -> None:
        self._history: dict[bytes, list[KeyValue]] = {}
        self._changes: dict[int, list[KeyValue | None]] = {}
        self._indexed = SortedKeys()
        self._live = SortedKeys()
        self._size = 0

    # ----------------------------------------------------------------- sizes

    @property
    def size_bytes(self) -> int:
        """The approximate bytes held: keys and values of every retained version."""
        return self._size

    @property
    def live_count(self) -> int:
        """How many keys exist now."""
        return len(self._live)

    # ----------------------------------------------------------------- reads

    def latest(self, key: bytes) -> KeyValue | None:
        """The key's newest version (including uncommitted txn writes), or None if absent."""
        history = self._history.get(key)
        if history is None:
            return None
        kv = history[-1]
        return None if kv.is_tombstone else kv

    def get(self, key: bytes, revision: int | None = None) -> KeyValue | None:
        """The key's version as of ``revision`` (None: newest), or None if absent then.

        Only meaningful for revisions at or above the compaction revision.
        """
        history = self._history.get(key)
        if history is None:
            return None
        kv = history[-1]
        if revision is not None and kv.mod_revision > revision:
            i = bisect_right(history, revision, key=_mod)
            if i == 0:
                return None
            kv = history[i - 1]
        return None if kv.is_tombstone else kv

    def before(self, kv: KeyValue) -> KeyValue | None:
        """The key's version as of the revision just before ``kv`` was written.

        This is a watch event's ``prev_kv``: None when the key did not exist
        then, or when that version has been compacted away.
        """
        history = self._history.get(kv.key)
        if history is None:
            return None
        i = bisect_left(history, kv.mod_revision, key=_mod)
        if i == 0:
            return None
        prev = history[i - 1]
        return None if prev.is_tombstone else prev

    def scan(self, span: Interval, revision: int | None = None) -> Iterator[KeyValue]:
        """The live versions of the keys in ``span`` as of ``revision``, in key order.

        ``revision=None`` reads the newest state in O(log n + k); a past
        revision also walks keys deleted since, O(log n + k_indexed). The key
        space must not be written while the iterator is in use.
        """
        start, end = span
        if revision is None:
            history = self._history
            for key in self._live.irange(start, end):
                yield history[key][-1]
            return
        for key in self._indexed.irange(start, end):
            kv = self.get(key, revision)
            if kv is not None:
                yield kv

    def count(self, span: Interval, revision: int | None = None) -> int:
        """How many keys in ``span`` exist as of ``revision`` (None: now)."""
        if revision is None:
            return self._live.count(*span)
        return sum(1 for _ in self.scan(span, revision))

    def changes(self, revision: int) -> list[KeyValue]:
        """The versions written at main revision ``revision``, in sub-revision order."""
        return [kv for kv in self._changes.get(revision, ()) if kv is not None]

    def events(self, span: Interval, start: int, end: int) -> list[Event]:
        """The events on keys in ``span`` at revisions ``start..end`` (inclusive), in order.

        A single-key span reads the key's own history; a wider one walks the
        revision log from ``start``. Versions that compaction dropped (those
        before the compaction revision, and tombstones at it) are not there.
        """
        if end < start:
            return []
        key, stop = span
        if stop is not None and stop == key + b"\x00":
            history = self._history.get(key, [])
            lo = bisect_left(history, start, key=_mod)
            hi = bisect_right(history, end, key=_mod)
            return [self._event(kv) for kv in history[lo:hi]]
        out: list[Event] = []
        changes = self._changes
        for main in range(start, end + 1):
            group = changes.get(main)
            if group is None:
                continue
            for kv in group:
                if kv is not None and contains(span, kv.key):
                    out.append(self._event(kv))
        return out

    def _event(self, kv: KeyValue) -> Event:
        """The watch event for a retained version."""
        kind = EventType.DELETE if kv.is_tombstone else EventType.PUT
        return Event(kind, kv, self.before(kv))

    def records(self, up_to: int | None = None) -> Iterator[tuple[int, list[KeyValue | None]]]:
        """Every retained version, grouped by main revision, in revision order.

        Within a group a version's index is its sub revision; ``None`` marks a
        version compaction dropped. Stops after revision ``up_to`` when given.
        The lists are the key space's own: callers must not change them.
        """
        for main, group in self._changes.items():
            if up_to is not None and main > up_to:
                return
            yield main, group

    # ---------------------------------------------------------------- writes

    def append(self, kv: KeyValue) -> None:
        """Record a new version (or tombstone) at ``kv.mod_revision``, after its earlier changes.

        The caller guarantees ``kv.mod_revision`` is at least every revision
        already recorded.
        """
        key = kv.key
        history = self._history.get(key)
        was_live = False
        if history is None:
            self._history[key] = [kv]
            self._indexed.add(key)
        else:
            was_live = not history[-1].is_tombstone
            history.append(kv)
        group = self._changes.get(kv.mod_revision)
        if group is None:
            self._changes[kv.mod_revision] = [kv]
        else:
            group.append(kv)
        if kv.is_tombstone:
            if was_live:
                self._live.discard(key)
        elif not was_live:
            self._live.add(key)
        self._size += record_size(kv)

    @classmethod
    def load(cls, versions: Iterable[tuple[int, KeyValue]]) -> Keyspace:
        """A key space holding ``(sub, version)`` pairs given in (main, sub) order.

        The bulk path for restoring a snapshot: the ordered indexes are built
        once at the end. Raises ``ValueError`` when the versions are out of
        order.
        """
        keyspace = cls()
        history = keyspace._history
        changes = keyspace._changes
        size = 0
        last_main = -1
        for sub, kv in versions:
            main = kv.mod_revision
            if main < last_main:
                raise ValueError("versions out of revision order")
            last_main = main
            group = changes.get(main)
            if group is None:
                group = changes[main] = []
            if sub < len(group):
                raise ValueError("versions out of sub-revision order")
            if sub > len(group):
                group.extend([None] * (sub - len(group)))  # versions compaction dropped
            group.append(kv)
            versions_of_key = history.get(kv.key)
            if versions_of_key is None:
                history[kv.key] = [kv]
            else:
                versions_of_key.append(kv)
            size += len(kv.key) + len(kv.value) + RECORD_OVERHEAD
        keyspace._indexed = SortedKeys(history)
        keyspace._live = SortedKeys(k for k, h in history.items() if not h[-1].is_tombstone)
        keyspace._size = size
        return keyspace

    def compact(self, revision: int, previous: int) -> int:
        """Drop the history superseded at ``revision``; returns how many versions went.

        For every key, of its versions at or before ``revision`` only the
        newest is kept, and not even that one when it is a tombstone (a key
        whose history becomes empty leaves the index). ``previous`` is the
        last compaction revision (or -1): keys untouched since then are
        already compact, so the work is proportional to the revisions
        ``previous + 1 .. revision``, not to the whole key space.
        """
        touched: dict[bytes, None] = {}  # ordered set: keys written in (previous, revision]
        for main in range(max(previous + 1, 0), revision + 1):
            for kv in self._changes.get(main, ()):
                if kv is not None:
                    touched[kv.key] = None

        dropped: dict[int, set[int]] = {}  # main revision -> ids of versions dropped there
        removed = 0
        for key in touched:
            history = self._history[key]
            i = bisect_right(history, revision, key=_mod)
            if i == 0:
                continue
            newest = history[i - 1]
            keep_newest = not newest.is_tombstone
            gone = history[: i - 1] if keep_newest else history[:i]
            if not gone:
                continue
            for kv in gone:
                dropped.setdefault(kv.mod_revision, set()).add(id(kv))
                self._size -= record_size(kv)
            removed += len(gone)
            rest = history[i:]
            if keep_newest:
                rest.insert(0, newest)
            if rest:
                self._history[key] = rest
            else:
                del self._history[key]
                self._indexed.discard(key)

        for main, ids in dropped.items():
            group = self._changes[main]
            for sub, kv in enumerate(group):
                if kv is not None and id(kv) in ids:
                    group[sub] = None
            if all(kv is None for kv in group):
                del self._changes[main]
        return removed
