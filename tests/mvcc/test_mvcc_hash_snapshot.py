"""HashKV (pinned to values a real etcd 3.4 computed) and the snapshot encoding."""

from __future__ import annotations

import pytest

from consensus.mvcc import (
    CompactedError,
    DeleteRangeRequest,
    FutureRevisionError,
    HashKVResult,
    KVStore,
    PutRequest,
    RangeRequest,
    SnapshotError,
    TxnRequest,
)
from consensus.mvcc.hash import marshal_key_value, revision_key
from consensus.mvcc.kv import KeyValue

from .helpers import keys, put

# HashKV at every revision after each step, as etcd 3.4.23 answered for the same
# operations (recorded with the real binary; keys are revision: hash).
ETCD_HASHES: list[tuple[str, dict[int, int]]] = [
    ("start", {1: 1084519789}),
    ("put a=1", {2: 2587454935}),
    ("put b=2 lease 7", {3: 1848723582}),
    ("put a=3", {4: 2719140733}),
    ("txn", {5: 1984184263}),
    ("delete a", {6: 2978642692}),
    ("put a lease 7", {7: 3428583852}),
    ("put binary", {8: 2415674779}),
    ("compact 4", {5: 3365431263, 6: 2803409444, 7: 677906682, 8: 3891409596}),
    ("put c=y", {9: 3114208702}),
    ("revoke 7", {10: 1040431687}),
    ("put e=5", {11: 2563889576}),
    ("compact 9", {10: 2905672834, 11: 3184489603}),
]


def etcd_scenario() -> list[KVStore]:
    """The store after each step of ``ETCD_HASHES``."""
    store = KVStore()
    store.lease_grant(7, 1000)
    steps = [
        lambda: store.put(PutRequest(b"a", b"1")),
        lambda: store.put(PutRequest(b"b", b"2", lease=7)),
        lambda: store.put(PutRequest(b"a", b"3")),
        lambda: store.txn(TxnRequest(success=(
            PutRequest(b"c", b"x" * 40), DeleteRangeRequest(b"b"), PutRequest(b"d", b"")
        ))),
        lambda: store.delete_range(DeleteRangeRequest(b"a")),
        lambda: store.put(PutRequest(b"a", b"again", lease=7)),
        lambda: store.put(PutRequest(b"\xff\xfe", b"\x00\x01")),
        lambda: store.compact(4),
        lambda: store.put(PutRequest(b"c", b"y")),
        lambda: store.lease_revoke(7),
        lambda: store.put(PutRequest(b"e", b"5")),
        lambda: store.compact(9),
    ]
    snapshots = [KVStore.from_bytes(store.to_bytes())]
    for step in steps:
        step()
        snapshots.append(KVStore.from_bytes(store.to_bytes()))
    return snapshots


def test_hash_kv_equals_etcds() -> None:
    for (label, expected), store in zip(ETCD_HASHES, etcd_scenario(), strict=True):
        for revision, value in expected.items():
            assert store.hash_kv(revision).hash == value, (label, revision)
        assert store.hash_kv().hash == expected[store.revision], label


def test_hash_kv_result_and_errors() -> None:
    store = etcd_scenario()[-1]
    assert store.hash_kv() == HashKVResult(3184489603, 9, 11)
    with pytest.raises(CompactedError):
        store.hash_kv(9)  # at the compaction revision is refused too, as in etcd
    with pytest.raises(FutureRevisionError):
        store.hash_kv(12)


def test_bucket_encoding() -> None:
    assert revision_key(2, 1, False) == b"\x00" * 7 + b"\x02_" + b"\x00" * 7 + b"\x01"
    assert revision_key(2, 0, True).endswith(b"t")
    assert marshal_key_value(KeyValue(b"k", 2, 3, 1, b"v", 5)) == (
        b"\x0a\x01k\x10\x02\x18\x03\x20\x01\x2a\x01v\x30\x05"
    )
    assert marshal_key_value(KeyValue(b"k", 0, 9, 0)) == b"\x0a\x01k"  # tombstone
    assert marshal_key_value(KeyValue(b"k", 2, 2, 1, lease=-1))[-11:] == b"\x30" + b"\xff" * 9 + b"\x01"


def test_snapshot_round_trip_is_exact() -> None:
    for store in etcd_scenario():
        data = store.to_bytes()
        restored = KVStore.from_bytes(data)
        assert restored.to_bytes() == data
        assert restored.hash_kv() == store.hash_kv()
        assert restored.revision == store.revision
        assert restored.compact_revision == store.compact_revision
        assert keys(restored) == keys(store)
        assert restored.lease_leases() == store.lease_leases()
        assert restored.size_bytes == store.size_bytes


def test_restored_store_continues_identically() -> None:
    store = etcd_scenario()[6]
    restored = KVStore.from_bytes(store.to_bytes())
    for s in (store, restored):
        s.txn(TxnRequest(success=(PutRequest(b"a", ignore_value=True), PutRequest(b"z"))))
        s.lease_revoke(7)
        s.compact(s.revision - 1)
    assert restored.to_bytes() == store.to_bytes()
    assert restored.events_since(8, b"\x00", b"\x00") == store.events_since(8, b"\x00", b"\x00")
    r = RangeRequest(b"\x00", b"\x00", revision=store.revision - 1)
    assert restored.range(r) == store.range(r)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],
        lambda b: b[:10],
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],
        lambda b: b + b"\x00",
        lambda b: b"",
    ],
)
def test_damaged_snapshots_are_refused(damage: object) -> None:
    data = etcd_scenario()[7].to_bytes()
    with pytest.raises(SnapshotError):
        KVStore.from_bytes(damage(data))  # type: ignore[operator]


def test_snapshot_of_an_empty_store() -> None:
    data = KVStore().to_bytes()
    assert KVStore.from_bytes(data).revision == 1
    assert len(data) < 64


def test_snapshot_is_compact() -> None:
    store = KVStore()
    for i in range(1000):
        put(store, b"/services/api/%04d" % i, b"x" * 20)
    raw = sum(len(b"/services/api/0000") + 20 for _ in range(1000))
    assert len(store.to_bytes()) < raw * 3


def test_bulk_load_refuses_out_of_order_versions() -> None:
    from consensus.mvcc.keyspace import Keyspace

    first, second = KeyValue(b"a", 2, 2, 1), KeyValue(b"b", 3, 3, 1)
    with pytest.raises(ValueError):
        Keyspace.load([(0, second), (0, first)])
    with pytest.raises(ValueError):
        Keyspace.load([(1, first), (0, KeyValue(b"b", 2, 2, 1))])
    loaded = Keyspace.load([(0, first), (2, KeyValue(b"c", 2, 2, 1)), (0, second)])
    assert loaded.changes(2) == [first, KeyValue(b"c", 2, 2, 1)]
    assert [kv for _, group in loaded.records() for kv in group] == [
        first, None, KeyValue(b"c", 2, 2, 1), second
    ]
