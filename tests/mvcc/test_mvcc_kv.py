"""Put, DeleteRange and Range: revisions, versions and etcd's read semantics."""

from __future__ import annotations

import pytest

from consensus.mvcc import (
    CompactedError,
    DeleteRangeRequest,
    EmptyKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    KeyValue,
    KVStore,
    LeaseNotFoundError,
    LeaseProvidedError,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    ValueProvidedError,
)
from consensus.mvcc.errors import MVCCError

from .helpers import delete, get, keys, put


def test_fresh_store_is_at_revision_one() -> None:
    store = KVStore()
    assert store.revision == 1
    assert store.compact_revision == -1
    result = store.range(RangeRequest(b"\x00", b"\x00"))
    assert (result.kvs, result.count, result.more, result.revision) == ([], 0, False, 1)


def test_put_creates_then_updates_a_key() -> None:
    store = KVStore()
    assert put(store, b"k", b"v1") == 2
    assert get(store, b"k") == KeyValue(b"k", 2, 2, 1, b"v1")
    assert put(store, b"k", b"v2") == 3
    assert get(store, b"k") == KeyValue(b"k", 2, 3, 2, b"v2")
    assert store.revision == 3


def test_put_returns_prev_kv_only_when_asked() -> None:
    store = KVStore()
    assert store.put(PutRequest(b"k", b"1", prev_kv=True)).prev_kv is None
    assert store.put(PutRequest(b"k", b"2")).prev_kv is None
    assert store.put(PutRequest(b"k", b"3", prev_kv=True)).prev_kv == KeyValue(b"k", 2, 3, 2, b"2")


def test_delete_is_a_tombstone_and_recreation_starts_a_new_life() -> None:
    store = KVStore()
    put(store, b"k", b"1")  # 2
    put(store, b"k", b"2")  # 3
    result = store.delete_range(DeleteRangeRequest(b"k", prev_kv=True))
    assert (result.revision, result.deleted) == (4, 1)
    assert result.prev_kvs == [KeyValue(b"k", 2, 3, 2, b"2")]
    assert get(store, b"k") is None
    assert put(store, b"k", b"3") == 5
    assert get(store, b"k") == KeyValue(b"k", 5, 5, 1, b"3")
    # History is still readable at every revision.
    assert get(store, b"k", 3) == KeyValue(b"k", 2, 3, 2, b"2")
    assert get(store, b"k", 4) is None
    assert get(store, b"k", 1) is None


def test_delete_of_nothing_makes_no_revision() -> None:
    store = KVStore()
    put(store, b"a")
    result = store.delete_range(DeleteRangeRequest(b"zz", b"zzz"))
    assert (result.revision, result.deleted, store.revision) == (2, 0, 2)


def test_delete_range_deletes_every_key_in_one_revision() -> None:
    store = KVStore()
    for k in (b"a", b"b", b"c", b"d"):
        put(store, k)
    assert store.delete_range(DeleteRangeRequest(b"b", b"d")).revision == 6
    assert keys(store) == [b"a", b"d"]
    assert delete(store, b"a", b"\x00") == 2
    assert keys(store) == []
    assert store.revision == 7


def test_put_flags() -> None:
    store = KVStore()
    store.lease_grant(5, 100)
    put(store, b"k", b"v", lease=5)
    store.put(PutRequest(b"k", ignore_value=True))
    assert get(store, b"k") == KeyValue(b"k", 2, 3, 2, b"v", 0)  # lease dropped, value kept
    store.put(PutRequest(b"k", b"w", lease=5))
    store.put(PutRequest(b"k", b"x", ignore_lease=True))
    assert get(store, b"k") == KeyValue(b"k", 2, 5, 4, b"x", 5)


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (PutRequest(b""), EmptyKeyError),
        (PutRequest(b"k", b"v", ignore_value=True), ValueProvidedError),
        (PutRequest(b"k", lease=1, ignore_lease=True), LeaseProvidedError),
        (PutRequest(b"missing", ignore_value=True), KeyNotFoundError),
        (PutRequest(b"missing", ignore_lease=True), KeyNotFoundError),
        (PutRequest(b"k", lease=42), LeaseNotFoundError),
        (PutRequest(b"missing", lease=42, ignore_value=True), LeaseNotFoundError),  # lease first
    ],
)
def test_put_refusals_change_nothing(request_: PutRequest, error: type[MVCCError]) -> None:
    store = KVStore()
    before = store.to_bytes()
    with pytest.raises(error):
        store.put(request_)
    assert store.to_bytes() == before


def test_error_texts_are_etcds() -> None:
    assert str(CompactedError()) == "mvcc: required revision has been compacted"
    assert str(FutureRevisionError()) == "mvcc: required revision is a future revision"
    assert CompactedError().grpc_message == "etcdserver: mvcc: required revision has been compacted"
    assert CompactedError.grpc_code == "OUT_OF_RANGE"
    assert str(LeaseNotFoundError()) == "etcdserver: requested lease not found"
    assert LeaseNotFoundError.grpc_code == "NOT_FOUND"
    assert str(KeyNotFoundError()) == "etcdserver: key not found"
    assert str(EmptyKeyError()) == "etcdserver: key is not provided"


def test_empty_key_is_refused_everywhere() -> None:
    store = KVStore()
    with pytest.raises(EmptyKeyError):
        store.range(RangeRequest(b""))
    with pytest.raises(EmptyKeyError):
        store.delete_range(DeleteRangeRequest(b""))


@pytest.fixture
def abcde() -> KVStore:
    """Keys a..e put at revisions 2..6 (value = key twice), then b rewritten at 7."""
    store = KVStore()
    for k in (b"a", b"b", b"c", b"d", b"e"):
        put(store, k, k * 2)
    put(store, b"b", b"zz")
    return store


def test_range_shapes(abcde: KVStore) -> None:
    assert keys(abcde, b"c", b"") == [b"c"]
    assert keys(abcde, b"b", b"d") == [b"b", b"c"]
    assert keys(abcde, b"c", b"\x00") == [b"c", b"d", b"e"]
    assert keys(abcde, b"\x00", b"\x00") == [b"a", b"b", b"c", b"d", b"e"]
    assert keys(abcde, b"d", b"b") == []
    assert keys(abcde, b"zz", b"") == []


def test_range_limit_count_more(abcde: KVStore) -> None:
    r = abcde.range(RangeRequest(b"a", b"z", limit=2))
    assert ([kv.key for kv in r.kvs], r.count, r.more, r.revision) == ([b"a", b"b"], 5, True, 7)
    r = abcde.range(RangeRequest(b"a", b"z", limit=5))
    assert (len(r.kvs), r.more) == (5, False)
    r = abcde.range(RangeRequest(b"a", b"z", limit=2, count_only=True))
    assert (r.kvs, r.count, r.more) == ([], 5, False)


def test_range_filters_do_not_change_count(abcde: KVStore) -> None:
    # Observed on etcd 3.4: count is taken before the min/max filters.
    r = abcde.range(RangeRequest(b"a", b"z", limit=2, min_mod_revision=4))
    assert ([kv.key for kv in r.kvs], r.count, r.more) == ([b"b", b"c"], 5, True)
    r = abcde.range(RangeRequest(b"a", b"z", limit=1, min_mod_revision=6))
    assert ([kv.key for kv in r.kvs], r.count, r.more) == ([b"b"], 5, True)
    r = abcde.range(RangeRequest(b"a", b"z", max_create_revision=3, min_create_revision=3))
    assert [kv.key for kv in r.kvs] == [b"b"]
    r = abcde.range(RangeRequest(b"a", b"z", max_mod_revision=5))
    assert [kv.key for kv in r.kvs] == [b"a", b"c", b"d"]


def test_range_sorting_matches_etcd(abcde: KVStore) -> None:
    def order(**options: object) -> list[bytes]:
        return keys(abcde, b"a", b"z", **options)

    assert order(sort_order=SortOrder.DESCEND, limit=2) == [b"e", b"d"]
    assert order(sort_target=SortTarget.MOD) == [b"a", b"c", b"d", b"e", b"b"]  # NONE sorts ascending
    assert order(sort_target=SortTarget.VALUE, sort_order=SortOrder.DESCEND) == [
        b"b", b"e", b"d", b"c", b"a"
    ]
    # Ties keep key order, ascending or descending (as etcd answers).
    assert order(sort_target=SortTarget.VERSION, sort_order=SortOrder.DESCEND) == [
        b"b", b"a", b"c", b"d", b"e"
    ]
    assert order(sort_target=SortTarget.VERSION, sort_order=SortOrder.ASCEND) == [
        b"a", b"c", b"d", b"e", b"b"
    ]
    assert order(sort_target=SortTarget.CREATE, sort_order=SortOrder.DESCEND) == [
        b"e", b"d", b"c", b"b", b"a"
    ]


def test_range_limit_with_order_none_sorts_only_the_fetched_keys(abcde: KVStore) -> None:
    # etcd fetches limit+1 keys in key order, then sorts them by the target.
    r = abcde.range(RangeRequest(b"a", b"z", limit=2, sort_target=SortTarget.MOD))
    assert ([kv.key for kv in r.kvs], r.more) == ([b"a", b"c"], True)


def test_keys_only_drops_values(abcde: KVStore) -> None:
    r = abcde.range(RangeRequest(b"a", keys_only=True))
    assert r.kvs == [KeyValue(b"a", 2, 2, 1, b"")]


def test_range_at_past_revision(abcde: KVStore) -> None:
    r = abcde.range(RangeRequest(b"a", b"z", revision=3))
    assert ([kv.key for kv in r.kvs], r.count, r.revision) == ([b"a", b"b"], 2, 7)
    assert abcde.range(RangeRequest(b"b", revision=6)).kvs[0].value == b"bb"
    r = abcde.range(RangeRequest(b"a", b"z", revision=4, limit=1))
    assert (r.count, r.more) == (3, True)
    assert abcde.range(RangeRequest(b"a", b"z", revision=4, count_only=True)).count == 3
    assert abcde.range(RangeRequest(b"a", b"z", revision=-3)).count == 5  # <= 0 is "now"


def test_range_revision_errors(abcde: KVStore) -> None:
    with pytest.raises(FutureRevisionError):
        abcde.range(RangeRequest(b"a", revision=8))
    abcde.compact(5)
    with pytest.raises(CompactedError):
        abcde.range(RangeRequest(b"a", revision=4))
    assert keys(abcde, b"a", b"z", revision=5) == [b"a", b"b", b"c", b"d"]


def test_range_after_deletes_skips_tombstones() -> None:
    store = KVStore()
    for i in range(50):
        put(store, b"k%02d" % i)
    delete(store, b"k10", b"k40")
    r = store.range(RangeRequest(b"k", b"l", limit=12))
    assert r.count == 20
    assert [kv.key for kv in r.kvs][9:] == [b"k09", b"k40", b"k41"]
    assert store.range(RangeRequest(b"k", b"l", revision=51)).count == 50


def test_size_accounting_grows_and_shrinks_with_history() -> None:
    store = KVStore()
    assert store.size_bytes == 0
    put(store, b"k", b"x" * 100)
    one = store.size_bytes
    assert one >= 101
    put(store, b"k", b"y" * 100)
    assert store.size_bytes > one
    store.compact(store.revision)
    assert store.size_bytes == one
    store.lease_grant(1, 10)
    assert store.size_bytes > one
