"""The durable Raft log of one member: a WAL and snapshot files behind a MemoryStorage.

Layout of a data directory::

    <data_dir>/wal/   WAL segments  (consensus.storage.wal)
    <data_dir>/snap/  snapshot files (consensus.storage.snapshot_store)

The Raft core reads only from :attr:`DurableLog.storage`, a
:class:`~consensus.raft.storage.MemoryStorage` rebuilt at :meth:`DurableLog.open`
(apply the snapshot the WAL's last marker names, set the hard state, append
the entries after it). Durability comes from writing the WAL and snapshot
files first, in the order :meth:`DurableLog.persist` documents.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence

from consensus.raft.storage import MemoryStorage
from consensus.raft.types import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDateError,
)
from consensus.server import failpoints
from consensus.storage.background_snapshot import BackgroundSnapshot
from consensus.storage.diskio import fsync_dir
from consensus.storage.group_commit import GroupCommitter
from consensus.storage.snapshot_store import SnapshotCorruptError, SnapshotStore
from consensus.storage.wal import DEFAULT_SEGMENT_BYTES, WAL, RecoveredLog

log = logging.getLogger(__name__)

WAL_DIR = "wal"
SNAPSHOT_DIR = "snap"

DEFAULT_CATCH_UP_ENTRIES = 5000
"""Entries kept in memory behind a new snapshot, so slow followers can catch up without one."""

DEFAULT_KEEP_SNAPSHOTS = 5
"""Snapshot files kept on disk (the newest ones)."""


class DurableLogError(Exception):
    """The data directory is inconsistent (e.g. the WAL needs a snapshot file that is missing)."""


class DurableLog:
    """A member's durable Raft log: WAL + snapshot store in a data directory, served from memory.

    Use from one thread (the one driving the Raft loop); the group-commit
    thread behind :meth:`persist_async` only touches the WAL, which is thread-safe.
    """

    def __init__(
        self,
        data_dir: str,
        wal: WAL,
        snapshots: SnapshotStore,
        storage: MemoryStorage,
        *,
        catch_up_entries: int,
        keep_snapshots: int,
    ) -> None:
        """Internal: use :meth:`open`."""
        self._data_dir = data_dir
        self._wal = wal
        self._snapshots = snapshots
        self._storage = storage
        self._catch_up_entries = catch_up_entries
        self._keep_snapshots = keep_snapshots
        self._committer: GroupCommitter | None = None
        self._write_lock: asyncio.Lock | None = None

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        metadata: bytes,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        preallocate: bool = True,
        catch_up_entries: int = DEFAULT_CATCH_UP_ENTRIES,
        keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
    ) -> DurableLog:
        """Open the log in ``data_dir``, creating it (with ``metadata``) if it has no WAL yet.

        An existing WAL keeps the metadata it was created with (see
        :attr:`metadata`); ``metadata`` is only written on creation.
        """
        data_dir = os.path.abspath(os.fspath(data_dir))
        if not os.path.isdir(data_dir):
            os.makedirs(data_dir, exist_ok=True)
            fsync_dir(os.path.dirname(data_dir))
        wal_dir = os.path.join(data_dir, WAL_DIR)
        snapshots = SnapshotStore(os.path.join(data_dir, SNAPSHOT_DIR))
        if WAL.exists(wal_dir):
            wal, recovered = WAL.open(
                wal_dir, segment_bytes=segment_bytes, preallocate=preallocate
            )
        else:
            if snapshots.list_snapshots():
                raise DurableLogError(
                    f"{data_dir} has snapshot files but no WAL: refusing to start from them alone"
                )
            wal = WAL.create(
                wal_dir, metadata, segment_bytes=segment_bytes, preallocate=preallocate
            )
            recovered = RecoveredLog(metadata, HardState(), 0, 0, [])
        try:
            storage = _rebuild_storage(recovered, snapshots)
        except BaseException:
            wal.close()
            raise
        return cls(
            data_dir,
            wal,
            snapshots,
            storage,
            catch_up_entries=catch_up_entries,
            keep_snapshots=keep_snapshots,
        )

    # -- what the Raft loop uses ------------------------------------------------

    @property
    def storage(self) -> MemoryStorage:
        """The in-memory log the Raft core reads (a LogStorage)."""
        return self._storage

    @property
    def metadata(self) -> bytes:
        """The metadata stored in the WAL when it was created."""
        return self._wal.metadata

    @property
    def wal(self) -> WAL:
        return self._wal

    @property
    def snapshots(self) -> SnapshotStore:
        return self._snapshots

    @property
    def data_dir(self) -> str:
        return self._data_dir

    def persist(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        must_sync: bool = True,
    ) -> None:
        """Persist a Ready's state, then expose it in :attr:`storage`.

        Order: the snapshot file (durable) and its WAL marker, then the
        entries, then the hard state; fsync when ``must_sync`` (always when a
        snapshot is given); then the MemoryStorage is updated (snapshot
        applied, hard state set, entries appended).
        """
        has_snapshot = snapshot is not None and not snapshot.is_empty()
        if snapshot is not None and has_snapshot:
            self._check_newer(snapshot)
            self._snapshots.save(snapshot)
            self._wal.save_snapshot_marker(snapshot.metadata.index, snapshot.metadata.term)
        self._wal.save(hard_state, entries)
        if must_sync or has_snapshot:
            self._wal.sync()
        self._update_memory(hard_state, entries, snapshot if has_snapshot else None)
        if snapshot is not None and has_snapshot:
            self._after_snapshot_installed(snapshot.metadata.index)

    async def persist_async(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        must_sync: bool = True,
    ) -> None:
        """:meth:`persist` for asyncio callers, with group commit across concurrent calls.

        The WAL append and the MemoryStorage update happen in call order
        (under an asyncio lock; a snapshot file is written in the default
        executor); the wait for the fsync happens outside the lock, so several
        calls in flight share one fsync. The MemoryStorage may therefore hold
        entries a moment before they are durable: callers must not advance the
        Raft node (nor send what requires durability) before this returns.
        """
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        if self._committer is None:
            self._committer = GroupCommitter(self._wal)
        has_snapshot = snapshot is not None and not snapshot.is_empty()
        async with self._write_lock:
            if snapshot is not None and has_snapshot:
                self._check_newer(snapshot)
                await asyncio.get_running_loop().run_in_executor(
                    None, self._snapshots.save, snapshot
                )
                if failpoints.ACTIVE: failpoints.hit("snapshot-install-saved")  # noqa: E701 - test-only
                self._wal.save_snapshot_marker(snapshot.metadata.index, snapshot.metadata.term)
            seq = self._wal.save(hard_state, entries)
            self._update_memory(hard_state, entries, snapshot if has_snapshot else None)
        if must_sync or has_snapshot:
            await self._committer.wait_durable(seq)
        if snapshot is not None and has_snapshot:
            self._after_snapshot_installed(snapshot.metadata.index)

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Snapshot the applied state ``data`` at ``index`` and compact behind it.

        Saves the snapshot file, writes and syncs the WAL marker, deletes WAL
        segments recovery no longer needs, compacts the MemoryStorage keeping
        ``catch_up_entries`` entries before ``index``, and keeps only the
        newest ``keep_snapshots`` snapshot files. Blocking disk I/O.
        """
        snapshot = self._storage.create_snapshot(index, conf_state, data)
        self._snapshots.save(snapshot)
        if failpoints.ACTIVE: failpoints.hit("snapshot-saved-before-marker")  # noqa: E701 - test-only
        self._wal.save_snapshot_marker(index, snapshot.metadata.term)
        self._wal.release_to(index)  # syncs the marker before deleting anything
        self._compact_memory(index)
        self._snapshots.release(keep=self._keep_snapshots)
        return snapshot

    def start_background_snapshot(
        self, index: int, conf_state: ConfState, encode: Callable[[], bytes]
    ) -> BackgroundSnapshot:
        """Fork a child that writes the snapshot at ``index`` (see :mod:`background_snapshot`).

        ``encode`` runs in the child and returns the state as applied up to
        ``index`` (the caller forks right after applying it). Adopt the result
        with :meth:`adopt_snapshot`.
        """
        current = self._storage.snapshot().metadata.index
        if index <= current:
            raise SnapshotOutOfDateError(f"snapshot at {index} is not newer than {current}")
        metadata = SnapshotMetadata(index=index, term=self._storage.term(index), conf_state=conf_state.copy())
        return BackgroundSnapshot.start(self._snapshots, metadata, encode)

    async def adopt_snapshot(self, snapshot: Snapshot) -> bool:
        """Make a snapshot already saved in the store (by a background child) the log's snapshot.

        Then as :meth:`create_snapshot`: WAL marker, release, compaction. False
        (and the file deleted) when a newer snapshot was taken or installed
        from the leader meanwhile. Serialized with :meth:`persist_async`, whose
        snapshot install also writes a marker.
        """
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        meta = snapshot.metadata
        async with self._write_lock:
            if meta.index <= self._storage.snapshot().metadata.index:
                self._snapshots.discard(meta.index, meta.term)
                return False
            adopted = self._storage.create_snapshot(meta.index, meta.conf_state, snapshot.data)
            if adopted.metadata.term != meta.term:  # the entry at index cannot change once applied
                raise DurableLogError(
                    f"snapshot at {meta.index} was written for term {meta.term}, the log says "
                    f"{adopted.metadata.term}"
                )
            # As create_snapshot, with its blocking disk I/O (the marker's fsync,
            # deleting WAL segments and old snapshot files of hundreds of MB) in
            # a thread: a background snapshot must not stall the loop at the end.
            index = adopted.metadata.index
            if failpoints.ACTIVE: failpoints.hit("snapshot-saved-before-marker")  # noqa: E701 - test-only
            self._wal.save_snapshot_marker(index, adopted.metadata.term)
            await asyncio.to_thread(self._wal.release_to, index)  # syncs the marker first
            self._compact_memory(index)
            await asyncio.to_thread(self._snapshots.release, self._keep_snapshots)
        return True

    def _compact_memory(self, index: int) -> None:
        """Drop entries from the MemoryStorage, keeping ``catch_up_entries`` before ``index``."""
        compact_to = index - self._catch_up_entries
        if compact_to >= self._storage.first_index():
            self._storage.compact(compact_to)

    def close(self) -> None:
        """Stop group commit, sync and close the WAL. Idempotent."""
        if self._committer is not None:
            self._committer.close()
            self._committer = None
        self._wal.close()

    # -- internals -------------------------------------------------------------------

    def _update_memory(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        if snapshot is not None:
            self._storage.apply_snapshot(snapshot)
        if hard_state is not None:
            self._storage.set_hard_state(hard_state)
        if entries:
            self._storage.append(list(entries))

    def _check_newer(self, snapshot: Snapshot) -> None:
        """Refuse a snapshot that is not newer than ours before anything reaches the disk."""
        current = self._storage.snapshot().metadata.index
        if snapshot.metadata.index <= current:
            raise SnapshotOutOfDateError(
                f"snapshot at {snapshot.metadata.index} is not newer than {current}"
            )

    def _after_snapshot_installed(self, index: int) -> None:
        """A snapshot from the leader replaced the log: drop what it covers on disk."""
        self._wal.release_to(index)
        self._snapshots.release(keep=self._keep_snapshots)

    def __enter__(self) -> DurableLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _rebuild_storage(recovered: RecoveredLog, snapshots: SnapshotStore) -> MemoryStorage:
    """The MemoryStorage a recovered WAL describes, with the snapshot its marker names."""
    storage = MemoryStorage()
    index, term = recovered.snapshot_index, recovered.snapshot_term
    if index > 0:
        try:
            snapshot = snapshots.load(index, term)
        except (FileNotFoundError, SnapshotCorruptError) as exc:
            raise DurableLogError(
                f"the WAL starts after a snapshot at index {index} term {term}, "
                f"but its file is unusable: {exc}"
            ) from exc
        storage.apply_snapshot(snapshot)
    # A snapshot file newer than the WAL's last marker was written by a persist
    # or create_snapshot that crashed before its marker: it is not part of the log.
    for path in snapshots.discard_newer(index):
        log.warning("removed snapshot %s: its WAL marker was never written", path)
    hard_state = recovered.hard_state
    if hard_state.commit < index:
        # The marker can survive a torn tail that lost the hard state written after
        # it; a snapshot is committed by definition.
        hard_state = HardState(hard_state.term, hard_state.vote, index)
    storage.set_hard_state(hard_state)
    storage.append(recovered.entries)
    return storage
