"""Compaction: what history survives, and the revision checks around it."""

from __future__ import annotations

import pytest

from consensus.mvcc import (
    CompactedError,
    FutureRevisionError,
    KeyValue,
    KVStore,
    RangeRequest,
)

from .helpers import delete, get, keys, put


@pytest.fixture
def store() -> KVStore:
    """a@2, a@3, b@4, deleted b@5, c@6, a@7."""
    s = KVStore()
    put(s, b"a", b"1")
    put(s, b"a", b"2")
    put(s, b"b", b"x")
    delete(s, b"b")
    put(s, b"c", b"y")
    put(s, b"a", b"3")
    return s


def test_compaction_keeps_the_newest_version_at_or_before_it(store: KVStore) -> None:
    removed = store.compact(6)
    # a@2 superseded by a@3; b@4 and its tombstone @5 both go.
    assert removed == 3
    assert store.compact_revision == 6
    assert keys(store, revision=6) == [b"a", b"c"]
    assert get(store, b"a", 6) == KeyValue(b"a", 2, 3, 2, b"2")
    assert get(store, b"a") == KeyValue(b"a", 2, 7, 3, b"3")
    assert store.range(RangeRequest(b"\x00", b"\x00", revision=6)).count == 2
    assert store.revision == 7  # compaction makes no revision


def test_compaction_revision_checks(store: KVStore) -> None:
    with pytest.raises(FutureRevisionError):
        store.compact(8)
    store.compact(3)
    with pytest.raises(CompactedError):
        store.compact(3)
    with pytest.raises(CompactedError):
        store.compact(2)
    with pytest.raises(CompactedError):
        store.range(RangeRequest(b"a", revision=2))
    assert get(store, b"a", 3) == KeyValue(b"a", 2, 3, 2, b"2")
    store.compact(7)  # up to the current revision is allowed
    assert keys(store) == [b"a", b"c"]


def test_incremental_compactions_equal_one_big_one(store: KVStore) -> None:
    other = KVStore.from_bytes(store.to_bytes())
    store.compact(3)
    store.compact(5)
    store.compact(7)
    other.compact(7)
    assert store.to_bytes() == other.to_bytes()
    assert store.hash_kv() == other.hash_kv()


def test_a_deleted_key_leaves_the_index_once_compacted() -> None:
    store = KVStore()
    put(store, b"gone")
    delete(store, b"gone")
    store.compact(store.revision)
    assert store.to_bytes() == KVStore.from_bytes(store.to_bytes()).to_bytes()
    assert store.events_since(store.revision, b"gone") == []
    assert store.size_bytes == 0


def test_a_recreated_key_keeps_only_its_new_life(store: KVStore) -> None:
    delete(store, b"a")  # 8
    put(store, b"a", b"new")  # 9
    store.compact(8)
    assert get(store, b"a", 8) is None
    assert get(store, b"a") == KeyValue(b"a", 9, 9, 1, b"new")
