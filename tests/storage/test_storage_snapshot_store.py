"""Snapshot files: atomic save, checksum verification, fallback to an older file, release."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from consensus.raft.types import ConfState, Snapshot, SnapshotMetadata
from consensus.storage.snapshot_store import (
    SnapshotCorruptError,
    SnapshotStore,
    parse_snapshot_name,
    snapshot_name,
)


def snapshot(index: int, term: int, data: bytes = b"state", voters: tuple[int, ...] = (1, 2, 3)) -> Snapshot:
    return Snapshot(
        data=data,
        metadata=SnapshotMetadata(index, term, ConfState(list(voters), [7])),
    )


def test_save_load_round_trip(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snap")
    saved = snapshot(42, 3, os.urandom(100_000))
    path = store.save(saved)
    assert os.path.basename(path) == "0000000000000003-000000000000002a.snap"
    assert store.load(42, 3) == saved
    assert store.load_latest() == saved
    assert store.list_snapshots() == [(42, 3)]
    assert not [n for n in os.listdir(store.directory) if n.endswith(".tmp")]


def test_names() -> None:
    assert snapshot_name(term=3, index=42) == "0000000000000003-000000000000002a.snap"
    assert parse_snapshot_name("0000000000000003-000000000000002a.snap") == (42, 3)
    assert parse_snapshot_name("x.snap") is None


def test_empty_store(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.load_latest() is None
    with pytest.raises(FileNotFoundError):
        store.load(1, 1)
    with pytest.raises(ValueError):
        store.save(Snapshot())


def test_empty_membership_and_data(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    empty = Snapshot(b"", SnapshotMetadata(1, 1, ConfState([], [])))
    store.save(empty)
    assert store.load_latest() == empty


@pytest.mark.parametrize("damage", ["flip data", "flip metadata", "truncate", "extend", "magic"])
def test_corrupt_newest_falls_back_to_the_previous(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore(tmp_path)
    older = snapshot(10, 1, b"older")
    store.save(older)
    newest = store.save(snapshot(20, 2, b"newer state" * 100))
    content = bytearray(Path(newest).read_bytes())
    if damage == "flip data":
        content[-5] ^= 0x01
    elif damage == "flip metadata":
        content[24] ^= 0x01  # the index in the body
    elif damage == "truncate":
        del content[-1]
    elif damage == "extend":
        content += b"\x00"
    else:
        content[0:8] = b"NOTASNAP"
    Path(newest).write_bytes(bytes(content))

    with pytest.raises(SnapshotCorruptError, match=r"0000000000000002-0000000000000014\.snap"):
        store.load(20, 2)
    with caplog.at_level(logging.WARNING):
        assert store.load_latest() == older
    assert "falling back" in caplog.text


def test_no_valid_snapshot_is_an_error(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    path = store.save(snapshot(5, 1))
    Path(path).write_bytes(Path(path).read_bytes()[:10])
    with pytest.raises(SnapshotCorruptError, match="no valid snapshot"):
        store.load_latest()


def test_renamed_file_is_detected(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    path = store.save(snapshot(5, 1))
    os.rename(path, store.path_of(6, 1))
    with pytest.raises(SnapshotCorruptError, match="its name"):
        store.load(6, 1)


def test_unfinished_save_leaves_no_visible_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(snapshot(5, 1))
    # A crash mid-save leaves only the temp file, which is never read and is cleaned up.
    Path(store.path_of(9, 2) + ".tmp").write_bytes(b"half a snapshot")
    store = SnapshotStore(tmp_path)
    assert store.list_snapshots() == [(5, 1)]
    assert store.load_latest() == snapshot(5, 1)
    assert os.listdir(tmp_path) == [snapshot_name(1, 5)]


def test_saving_the_same_position_replaces_atomically(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(snapshot(5, 1, b"first"))
    store.save(snapshot(5, 1, b"second"))
    assert store.load(5, 1).data == b"second"


def test_release_keeps_the_newest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for index in range(1, 8):
        store.save(snapshot(index * 10, 1))
    removed = store.release(keep=3)
    assert len(removed) == 4
    assert store.list_snapshots() == [(50, 1), (60, 1), (70, 1)]
    assert store.release(keep=3) == []
    with pytest.raises(ValueError):
        store.release(keep=0)
    assert store.discard_newer(60) == [store.path_of(70, 1)]
    assert store.list_snapshots() == [(50, 1), (60, 1)]
