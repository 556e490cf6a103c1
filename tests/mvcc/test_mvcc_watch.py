"""Watch support: the event log read back from history, and the apply hooks."""

from __future__ import annotations

import pytest

from consensus.mvcc import (
    CompactedError,
    DeleteRangeRequest,
    Event,
    EventType,
    FutureRevisionError,
    KeyValue,
    KVStore,
    PutRequest,
    TxnRequest,
)

from .helpers import delete, put


@pytest.fixture
def store() -> KVStore:
    """/a@2, /b@3, /a@4, txn(/c put, /b delete)@5, x@6."""
    s = KVStore()
    put(s, b"/a", b"1")
    put(s, b"/b", b"1")
    put(s, b"/a", b"2")
    s.txn(TxnRequest(success=(PutRequest(b"/c", b"1"), DeleteRangeRequest(b"/b"))))
    put(s, b"x", b"1")
    return s


def summary(events: list[Event]) -> list[tuple[str, bytes, int]]:
    return [(e.type.name, e.kv.key, e.kv.mod_revision) for e in events]


def test_events_since_a_single_key(store: KVStore) -> None:
    events = store.events_since(2, b"/a")
    assert summary(events) == [("PUT", b"/a", 2), ("PUT", b"/a", 4)]
    assert events[0].prev_kv is None
    assert events[1].prev_kv == KeyValue(b"/a", 2, 2, 1, b"1")
    assert store.events_since(5, b"/a") == []


def test_events_since_over_a_prefix_in_revision_and_sub_order(store: KVStore) -> None:
    assert summary(store.events_since(1, b"/", b"0")) == [
        ("PUT", b"/a", 2), ("PUT", b"/b", 3), ("PUT", b"/a", 4),
        ("PUT", b"/c", 5), ("DELETE", b"/b", 5),
    ]
    deletion = store.events_since(5, b"/b")[0]
    assert deletion.kv == KeyValue(b"/b", 0, 5, 0)  # etcd's DELETE kv: key and revision only
    assert deletion.prev_kv == KeyValue(b"/b", 3, 3, 1, b"1")
    assert summary(store.events_since(3, b"/", b"0", end_revision=4)) == [
        ("PUT", b"/b", 3), ("PUT", b"/a", 4)
    ]
    assert len(store.events_since(0, b"\x00", b"\x00")) == 6
    assert store.events_since(7, b"\x00", b"\x00") == []


def test_changes_of_one_revision(store: KVStore) -> None:
    assert [e.type for e in store.changes(5)] == [EventType.PUT, EventType.DELETE]
    assert store.changes(1) == []
    with pytest.raises(FutureRevisionError):
        store.changes(7)


def test_events_after_compaction(store: KVStore) -> None:
    store.compact(4)
    with pytest.raises(CompactedError):
        store.events_since(3, b"/a")
    with pytest.raises(CompactedError):
        store.changes(3)
    # Starting at the compaction revision is allowed; its prev_kv is gone.
    events = store.events_since(4, b"/", b"0")
    assert summary(events) == [("PUT", b"/a", 4), ("PUT", b"/c", 5), ("DELETE", b"/b", 5)]
    assert events[0].prev_kv is None
    assert events[2].prev_kv == KeyValue(b"/b", 3, 3, 1, b"1")


def test_hooks_get_each_revision_once_with_its_events(store: KVStore) -> None:
    calls: list[tuple[int, tuple[Event, ...]]] = []
    unsubscribe = store.subscribe(lambda rev, events: calls.append((rev, events)))
    put(store, b"/a", b"3")
    delete(store, b"nothing")
    store.txn(TxnRequest(success=(PutRequest(b"/d"), PutRequest(b"/e"))))
    assert [rev for rev, _ in calls] == [7, 8]
    assert calls[0][1][0].prev_kv == KeyValue(b"/a", 2, 4, 2, b"2")
    assert [e.kv.key for e in calls[1][1]] == [b"/d", b"/e"]
    # What the hook saw is what history gives back.
    assert store.events_since(7, b"\x00", b"\x00") == [*calls[0][1], *calls[1][1]]
    unsubscribe()
    unsubscribe()
    put(store, b"/a", b"4")
    assert len(calls) == 2


def test_a_failing_hook_does_not_stop_the_others_or_the_change(store: KVStore) -> None:
    seen: list[int] = []

    def broken(rev: int, events: tuple[Event, ...]) -> None:
        raise RuntimeError("boom")

    store.subscribe(broken)
    store.subscribe(lambda rev, events: seen.append(rev))
    with pytest.raises(ExceptionGroup):
        put(store, b"k")
    assert seen == [7]
    assert store.revision == 7
