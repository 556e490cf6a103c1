"""DurableLog: persist Ready state, snapshot and compact, and come back the same after a restart."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from consensus.raft.types import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDateError,
)
from consensus.storage.durable import DurableLog, DurableLogError
from consensus.storage.snapshot_store import SnapshotStore
from consensus.storage.wal import WAL


def open_log(path: Path, metadata: bytes = b"m", **options: int) -> DurableLog:
    """A DurableLog with small, non-preallocated segments (quick to scan)."""
    return DurableLog.open(path, metadata, segment_bytes=2048, preallocate=False, **options)


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, data=f"e{i}".encode()) for i in range(first, last + 1)]


def stored_entries(log: DurableLog) -> list[Entry]:
    storage = log.storage
    return storage.entries(storage.first_index(), storage.last_index() + 1, None)


def test_fresh_open_persist_and_reopen(tmp_path: Path) -> None:
    log = open_log(tmp_path, b"node-1")
    assert log.metadata == b"node-1"
    assert log.storage.last_index() == 0
    log.persist(HardState(1, 1, 0), entries(1, 5), None, must_sync=True)
    log.persist(HardState(1, 1, 3), [], None, must_sync=False)
    log.persist(None, entries(4, 6, term=2), None, must_sync=True)  # conflicting suffix
    assert stored_entries(log) == entries(1, 3) + entries(4, 6, term=2)
    log.close()

    log = open_log(tmp_path, b"ignored on reopen")
    assert log.metadata == b"node-1"
    assert log.storage.initial_state() == (HardState(1, 1, 3), ConfState())
    assert stored_entries(log) == entries(1, 3) + entries(4, 6, term=2)
    log.close()


def test_create_snapshot_compacts_and_survives_restart(tmp_path: Path) -> None:
    log = open_log(tmp_path, catch_up_entries=10, keep_snapshots=2)
    for first in range(1, 301, 10):
        log.persist(HardState(1, 1, first + 9), entries(first, first + 9), None, must_sync=True)
    segments_before = len(log.wal.segment_paths)
    for at in (100, 200, 250):
        snap = log.create_snapshot(at, ConfState([1, 2, 3]), f"state@{at}".encode())
        assert snap.metadata.index == at and snap.metadata.term == 1
    # Memory keeps catch_up_entries behind the snapshot for slow followers.
    assert log.storage.first_index() == 241
    assert log.storage.snapshot().metadata.index == 250
    # Old WAL segments and old snapshot files are gone.
    assert len(log.wal.segment_paths) < segments_before
    assert log.snapshots.list_snapshots() == [(200, 1), (250, 1)]
    log.persist(None, entries(301, 302), None, must_sync=True)
    log.close()

    log = open_log(tmp_path)
    storage = log.storage
    assert storage.snapshot().metadata.index == 250
    assert storage.snapshot().data == b"state@250"
    assert storage.initial_state() == (HardState(1, 1, 300), ConfState([1, 2, 3]))
    assert storage.first_index() == 251
    assert stored_entries(log) == entries(251, 302)
    log.close()


def test_snapshot_from_leader_replaces_the_log(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.persist(HardState(1, 0, 2), entries(1, 8), None, must_sync=True)
    received = Snapshot(b"leader state", SnapshotMetadata(50, 3, ConfState([1, 2], [4])))
    log.persist(HardState(3, 0, 50), [], received, must_sync=True)
    assert log.storage.first_index() == 51 and log.storage.last_index() == 50
    log.persist(None, entries(51, 52, term=3), None, must_sync=True)
    stale = Snapshot(b"old", SnapshotMetadata(50, 3, ConfState([1])))
    with pytest.raises(SnapshotOutOfDateError):
        log.persist(None, [], stale, must_sync=True)
    log.close()

    log = open_log(tmp_path)
    assert log.storage.snapshot() == received
    assert log.storage.initial_state() == (HardState(3, 0, 50), ConfState([1, 2], [4]))
    assert stored_entries(log) == entries(51, 52, term=3)
    log.close()


def test_orphan_snapshot_without_marker_is_discarded(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.persist(HardState(1, 1, 5), entries(1, 10), None, must_sync=True)
    log.close()
    # A crash between writing the snapshot file and its WAL marker.
    SnapshotStore(tmp_path / "snap").save(Snapshot(b"x", SnapshotMetadata(8, 1, ConfState([1]))))
    log = open_log(tmp_path)
    assert log.storage.snapshot().is_empty()
    assert stored_entries(log) == entries(1, 10)
    assert log.snapshots.list_snapshots() == []
    log.close()


def test_missing_snapshot_file_is_a_clear_error(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.persist(HardState(1, 1, 10), entries(1, 10), None, must_sync=True)
    log.create_snapshot(8, ConfState([1]), b"s")
    log.close()
    for name in os.listdir(tmp_path / "snap"):
        os.unlink(tmp_path / "snap" / name)
    with pytest.raises(DurableLogError, match="snapshot at index 8"):
        open_log(tmp_path)


def test_snapshot_files_without_wal_are_refused(tmp_path: Path) -> None:
    SnapshotStore(tmp_path / "snap").save(Snapshot(b"x", SnapshotMetadata(8, 1, ConfState([1]))))
    with pytest.raises(DurableLogError, match="no WAL"):
        DurableLog.open(tmp_path, b"m")
    assert not WAL.exists(tmp_path / "wal")


def test_commit_is_never_below_the_snapshot(tmp_path: Path) -> None:
    # A torn tail may keep a snapshot marker and lose the hard state written after it.
    log = open_log(tmp_path)
    log.persist(HardState(1, 1, 2), entries(1, 3), None, must_sync=True)
    received = Snapshot(b"s", SnapshotMetadata(20, 2, ConfState([1])))
    log.snapshots.save(received)
    log.wal.save_snapshot_marker(20, 2)
    log.close()
    log = open_log(tmp_path)
    assert log.storage.initial_state()[0] == HardState(1, 1, 20)
    log.close()


async def test_persist_async_group_commits_in_order(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    await asyncio.gather(
        *(
            log.persist_async(HardState(1, 1, i - 1), entries(i, i), None, must_sync=True)
            for i in range(1, 51)
        )
    )
    received = Snapshot(b"s", SnapshotMetadata(60, 2, ConfState([1])))
    await log.persist_async(HardState(2, 1, 60), [], received, must_sync=True)
    await log.persist_async(None, entries(61, 61, term=2), None, must_sync=False)
    assert stored_entries(log) == entries(61, 61, term=2)
    log.close()
    log = open_log(tmp_path)
    assert log.storage.snapshot() == received
    assert stored_entries(log) == entries(61, 61, term=2)  # close() synced the last one
    log.close()
