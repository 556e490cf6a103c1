"""The Raft log as one member sees it: stable entries in storage plus an unstable tail.

After etcd-io/raft's ``raftLog`` and ``unstable``. The stable part lives in a
:class:`~consensus.raft.storage.LogStorage`; entries appended since the last
``Ready`` (and a snapshot received from the leader) live in :class:`Unstable`
until the application reports them persisted.

Invariants:

* ``applied <= committed <= last_index()``.
* Committed entries are never truncated: ``append`` refuses to overwrite
  below ``committed``.
* ``unstable.offset`` is the index of ``unstable.entries[0]``; everything
  below it is in storage (or covered by ``unstable.snapshot``).
"""

from __future__ import annotations

from consensus.raft.storage import LogStorage, limit_size
from consensus.raft.types import (
    CompactedError,
    Entry,
    RaftError,
    Snapshot,
    UnavailableError,
)


class Unstable:
    """Entries and a snapshot not yet persisted by the application."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to ``i`` (of term ``t``) are persisted; drop them from here."""
        gt = self.maybe_term(i)
        if gt is None:
            return
        # Only if the entry persisted is still the one we hold (it may have
        # been replaced by a leader's conflicting append in the meantime).
        if gt == t and i >= self.offset:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace the whole unstable tail; storage will be overwritten too.
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """Stable storage, the unstable tail, and the commit and apply cursors."""

    def __init__(self, storage: LogStorage, max_applying_size: int | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Nothing below the snapshot can be uncommitted or unapplied.
        self.committed = first - 1
        self.applied = first - 1
        self.max_applying_size = max_applying_size

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # -- positions ------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int | None:
        """The term at ``i``, or None when ``i`` is compacted or beyond the last index."""
        dummy = self.first_index() - 1
        if i < dummy or i > self.last_index():
            return None
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        try:
            return self.storage.term(i)
        except (CompactedError, UnavailableError):
            return None

    def last_term(self) -> int:
        t = self.term(self.last_index())
        return t if t is not None else 0

    def match_term(self, i: int, t: int) -> bool:
        return self.term(i) == t

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Whether a log ending at (term, last_index) is at least as up to date as ours."""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    # -- reads ----------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries in ``[lo, hi)``, at most ``max_size`` bytes but never empty if any.

        Raises CompactedError when ``lo`` is below the first index.
        """
        if lo > hi:
            raise RaftError(f"invalid slice {lo} > {hi}")
        first = self.first_index()
        if lo < first:
            raise CompactedError(f"slice from {lo} below first index {first}")
        if hi > self.last_index() + 1:
            raise RaftError(f"slice [{lo},{hi}) out of bound [{first},{self.last_index()}]")
        if lo == hi:
            return []
        offset = self.unstable.offset
        ents: list[Entry] = []
        if lo < offset:
            stored = self.storage.entries(lo, min(hi, offset), max_size)
            if len(stored) < min(hi, offset) - lo:
                return stored  # size-limited inside storage
            ents = stored
        if hi > offset:
            tail = self.unstable.slice(max(lo, offset), hi)
            ents = ents + tail if ents else tail
        return limit_size(ents, max_size)

    def entries_from(self, i: int, max_size: int | None) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    def next_committed_entries(self) -> list[Entry]:
        """Committed entries not yet handed out for applying (none while a snapshot is pending)."""
        if self.unstable.snapshot is not None:
            return []
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_applying_size)
        return []

    def has_next_committed_entries(self) -> bool:
        if self.unstable.snapshot is not None:
            return False
        return self.committed + 1 > max(self.applied + 1, self.first_index())

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- writes ---------------------------------------------------------------
    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise RaftError(f"append after {after} is below committed {self.committed}")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: list[Entry]) -> int:
        """The index of the first entry that differs from our log (0 if none)."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term.

        Used to skip a whole term of mismatching entries per rejection.
        """
        while index > 0:
            our = self.term(index)
            if our is None:
                return index, 0
            if our <= term:
                return index, our
            index -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: list[Entry]
    ) -> int | None:
        """Append a leader's entries following (log_term, index); the new last index or None."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci != 0:
            if ci <= self.committed:
                raise RaftError(f"entry {ci} conflicts with committed entry (committed {self.committed})")
            self.append(ents[ci - (index + 1) :])
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise RaftError(
                    f"commit {to_commit} is out of range [last index {self.last_index()}]"
                )
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to ``max_index`` if its entry is from ``term`` (the leader's own)."""
        if max_index > self.committed and self.term(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise RaftError(f"applied {i} out of range [prev applied {self.applied}, committed {self.committed}]")
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
