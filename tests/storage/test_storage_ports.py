"""The snapshot store port: the in-memory and the file implementations keep the same contract."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from consensus.raft.storage import HardStateStore, MemorySnapshotStore, MemoryStorage, SnapshotStore
from consensus.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata
from consensus.storage.snapshot_store import SnapshotStore as FileSnapshotStore


def _snap(index: int, term: int, data: bytes) -> Snapshot:
    return Snapshot(data, SnapshotMetadata(index, term, ConfState([1, 2, 3], [4])))


@pytest.fixture(params=["memory", "files"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SnapshotStore]:
    if request.param == "memory":
        return MemorySnapshotStore
    return lambda: FileSnapshotStore(str(tmp_path / "snap"))


def test_empty_store_has_no_snapshot(make_store: Callable[[], SnapshotStore]) -> None:
    assert make_store().load_latest() is None


def test_latest_is_the_highest_index_with_data_and_membership(
    make_store: Callable[[], SnapshotStore],
) -> None:
    store = make_store()
    store.save(_snap(10, 2, b"ten"))
    store.save(_snap(30, 3, b"thirty"))
    latest = store.load_latest()
    assert latest is not None
    assert (latest.metadata.index, latest.metadata.term, latest.data) == (30, 3, b"thirty")
    assert latest.metadata.conf_state.voters == [1, 2, 3]
    assert latest.metadata.conf_state.learners == [4]


def test_memory_storage_is_a_hard_state_store() -> None:
    store: HardStateStore = MemoryStorage()
    store.set_hard_state(HardState(term=3, vote=2, commit=7))
    assert isinstance(store, MemoryStorage)
    hs, _ = store.initial_state()
    assert (hs.term, hs.vote, hs.commit) == (3, 2, 7)
