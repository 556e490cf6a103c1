"""The storage ports (log, hard state, snapshots) and their in-memory implementations.

The state machine only *reads* through :class:`LogStorage`; the application
writes to it (after persisting durably) when it processes a :class:`Ready`.
That mirrors etcd-io/raft: durable storage (``consensus.storage``) replays its
write-ahead log into a :class:`MemoryStorage` at start-up and keeps appending
to both.

Invariants of every implementation:

* ``first_index() - 1`` is the index of the last compacted entry (the
  snapshot's index); ``term(first_index() - 1)`` is still answerable.
* entries are contiguous from ``first_index()`` to ``last_index()``.
"""

from __future__ import annotations

from typing import Protocol

from consensus.raft.types import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDateError,
    UnavailableError,
)


class LogStorage(Protocol):
    """Read access to the stable log, hard state and latest snapshot."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership, read once at start-up."""
        ...

    def entries(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one if any, at most ``max_size`` bytes in all.

        Raises CompactedError when ``lo`` is compacted and UnavailableError when
        ``hi - 1`` is beyond the last index.
        """
        ...

    def term(self, index: int) -> int:
        """The term of the entry at ``index`` (``first_index()-1`` included)."""
        ...

    def first_index(self) -> int:
        ...

    def last_index(self) -> int:
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (may raise SnapshotTemporarilyUnavailable)."""
        ...


class HardStateStore(Protocol):
    """The write side for the hard state: the application persists each Ready's ``hard_state``."""

    def set_hard_state(self, hs: HardState) -> None:
        ...


class SnapshotStore(Protocol):
    """Where application snapshots are kept: saved whole, the newest loaded back.

    Implementations: :class:`MemorySnapshotStore` (tests, simulator) and
    ``consensus.storage.snapshot_store.SnapshotStore`` (files, atomic and
    checksummed). Invariant: ``load_latest()`` returns the snapshot with the
    highest index saved (and not corrupt), or None when none was saved.
    """

    def save(self, snapshot: Snapshot) -> object:
        ...

    def load_latest(self) -> Snapshot | None:
        ...


class MemorySnapshotStore:
    """A :class:`SnapshotStore` in memory."""

    def __init__(self) -> None:
        self._snapshots: dict[int, Snapshot] = {}

    def save(self, snapshot: Snapshot) -> int:
        self._snapshots[snapshot.metadata.index] = snapshot
        return snapshot.metadata.index

    def load_latest(self) -> Snapshot | None:
        if not self._snapshots:
            return None
        return self._snapshots[max(self._snapshots)]


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_size`` bytes, but never empty."""
    if max_size is None or not entries:
        return entries
    size = entries[0].size()
    limit = 1
    while limit < len(entries):
        size += entries[limit].size()
        if size > max_size:
            break
        limit += 1
    return entries[:limit]


class MemoryStorage:
    """A :class:`LogStorage` held in memory: tests, the simulator, and the cache behind the WAL.

    ``_ents[0]`` is a dummy entry standing for the snapshot position (its term
    and index), so ``_ents[i - offset]`` is the entry at index ``i``.
    """

    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    # -- LogStorage -------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return (
            HardState(self.hard_state.term, self.hard_state.vote, self.hard_state.commit),
            self._snapshot.metadata.conf_state.copy(),
        )

    def entries(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last index {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(f"term of compacted index {index} (offset {offset})")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"term of index {index} beyond last {self.last_index()}")
        return self._ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (by the application) -----------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = HardState(hs.term, hs.vote, hs.commit)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the log with ``snap``'s position; older snapshots are refused."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {snap.metadata.index} is not newer than {self._snapshot.metadata.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(
        self, index: int, conf_state: ConfState | None, data: bytes
    ) -> Snapshot:
        """Record a snapshot of the applied state at ``index`` (the caller compacts separately)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(f"snapshot at {index} is not newer than {self._snapshot.metadata.index}")
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} beyond last index {self.last_index()}")
        offset = self._ents[0].index
        if index < offset:
            # Compacted away: its term is unknown (a negative list index would
            # silently read another entry's term).
            raise CompactedError(f"snapshot index {index} is compacted (offset {offset})")
        cs = conf_state.copy() if conf_state is not None else self._snapshot.metadata.conf_state.copy()
        self._snapshot = Snapshot(
            data=data,
            metadata=SnapshotMetadata(index=index, term=self._ents[index - offset].term, conf_state=cs),
        )
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries up to and including ``compact_index``."""
        offset = self._ents[0].index
        if compact_index <= offset:
            raise CompactedError(f"index {compact_index} already compacted (offset {offset})")
        if compact_index > self.last_index():
            raise UnavailableError(f"compact {compact_index} beyond last index {self.last_index()}")
        i = compact_index - offset
        head = self._ents[i]
        self._ents = [Entry(term=head.term, index=head.index), *self._ents[i + 1 :]]

    def append(self, entries: list[Entry]) -> None:
        """Append ``entries``, truncating any conflicting suffix first."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # all already compacted
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset < 0:
            raise ValueError("append below the snapshot")
        if len(self._ents) > offset:
            del self._ents[offset:]
            self._ents.extend(entries)
        elif len(self._ents) == offset:
            self._ents.extend(entries)
        else:
            raise ValueError(
                f"missing log entries: last {self.last_index()}, appending at {entries[0].index}"
            )
