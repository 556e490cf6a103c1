"""The simulated durable disk of one member: writes are volatile until synced, crashes lose them.

It stands for the write-ahead log plus the snapshot file of a real member.
Writes (a received snapshot, log entries, the hard state) are appended, in
order, to a volatile buffer, as a WAL appends records to the page cache;
:meth:`Disk.sync` (an fsync) makes everything buffered durable at once;
:meth:`Disk.crash` throws the buffer away. Saving an application snapshot
syncs first (as etcd's ``SaveSnap``), then records the snapshot and compacts
the durable log, atomically.

Invariants:

* the state a restarted member sees (:meth:`Disk.load`) is exactly the state
  as of the last sync: nothing unsynced survives a crash, nothing synced is lost;
* buffered writes become durable in the order they were made (a WAL is
  sequential), so a durable hard state never refers to entries that are not
  durable as well, provided the member wrote the entries first;
* the durable log is a :class:`MemoryStorage` that only ever receives the
  same writes, in the same order, as the member's live storage.
"""

from __future__ import annotations

import enum

from consensus.raft.storage import MemoryStorage
from consensus.raft.types import ConfState, Entry, HardState, Snapshot


class _Op(enum.IntEnum):
    SNAPSHOT = 0
    ENTRIES = 1
    HARD_STATE = 2


class Disk:
    """One member's simulated disk: a durable :class:`MemoryStorage` and a volatile write buffer."""

    __slots__ = ("_durable", "_pending", "lost_writes", "syncs")

    def __init__(self) -> None:
        self._durable = MemoryStorage()
        self._pending: list[tuple[_Op, Snapshot | list[Entry] | HardState]] = []
        self.syncs = 0
        self.lost_writes = 0

    # -- writes ------------------------------------------------------------------------
    def write_snapshot(self, snap: Snapshot) -> None:
        self._pending.append((_Op.SNAPSHOT, snap))

    def write_entries(self, entries: list[Entry]) -> None:
        self._pending.append((_Op.ENTRIES, entries))

    def write_hard_state(self, hs: HardState) -> None:
        self._pending.append((_Op.HARD_STATE, HardState(hs.term, hs.vote, hs.commit)))

    def has_unsynced(self) -> bool:
        return bool(self._pending)

    def sync(self) -> None:
        """fsync: every buffered write becomes durable, in order."""
        self.syncs += 1
        if not self._pending:
            return
        durable = self._durable
        for op, payload in self._pending:
            if op == _Op.ENTRIES:
                assert isinstance(payload, list)
                durable.append(payload)
            elif op == _Op.HARD_STATE:
                assert isinstance(payload, HardState)
                durable.set_hard_state(payload)
            else:
                assert isinstance(payload, Snapshot)
                durable.apply_snapshot(payload)
        self._pending.clear()

    def save_app_snapshot(
        self, index: int, conf_state: ConfState, data: bytes, compact_to: int
    ) -> None:
        """Durably record the application's snapshot at ``index`` and compact the log.

        Syncs the buffer first: the snapshot covers applied (hence persisted)
        entries, and the hard state's commit must not end up below it.
        """
        self.sync()
        durable = self._durable
        durable.create_snapshot(index, conf_state, data)
        if compact_to > durable.first_index() - 1:
            durable.compact(compact_to)

    def crash(self) -> None:
        """Power loss: the volatile buffer is gone."""
        self.lost_writes += len(self._pending)
        self._pending.clear()

    # -- reads -----------------------------------------------------------------------
    def durable_hard_state(self) -> HardState:
        return self._durable.initial_state()[0]

    def durable_snapshot(self) -> Snapshot:
        return self._durable.snapshot()

    def load(self) -> MemoryStorage:
        """A fresh live storage rebuilt from the durable state (what a restart reads)."""
        durable = self._durable
        storage = MemoryStorage()
        snap = durable.snapshot()
        if not snap.is_empty():
            storage.apply_snapshot(snap)
        first, last = durable.first_index(), durable.last_index()
        if last >= first:
            storage.append(durable.entries(first, last + 1, None))
        storage.set_hard_state(durable.hard_state)
        return storage
