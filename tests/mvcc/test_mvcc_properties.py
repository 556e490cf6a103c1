"""Property tests: determinism across replicas and snapshots, and a dict model of the latest state."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.mvcc import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    KVStore,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
    prefix_end,
)
from consensus.mvcc.errors import MVCCError

KEYS = [b"a", b"ab", b"abc", b"b", b"ba", b"c", b"\x00", b"\xff"]
keys_ = st.sampled_from(KEYS)
values = st.sampled_from([b"", b"1", b"22", b"\x00\xff"])
range_ends = st.one_of(
    st.just(b""), st.just(b"\x00"), keys_, keys_.map(prefix_end)
)
leases = st.sampled_from([0, 0, 0, 1, 2, 3])

puts = st.builds(
    PutRequest, keys_, values, leases,
    prev_kv=st.booleans(), ignore_value=st.booleans(), ignore_lease=st.booleans(),
)
deletes = st.builds(DeleteRangeRequest, keys_, range_ends, prev_kv=st.booleans())
ranges = st.builds(
    RangeRequest, keys_, range_ends,
    limit=st.integers(0, 3), revision=st.integers(-1, 40),
    sort_order=st.sampled_from(SortOrder), sort_target=st.sampled_from(SortTarget),
    count_only=st.booleans(), min_mod_revision=st.integers(0, 12),
)
compares = st.builds(
    Compare, keys_, st.sampled_from(CompareTarget), st.sampled_from(CompareResult),
    st.one_of(st.integers(0, 10), values), range_ends,
)
txns = st.recursive(
    st.builds(
        TxnRequest,
        st.lists(compares, max_size=2).map(tuple),
        st.lists(st.one_of(puts, deletes, ranges), max_size=3).map(tuple),
        st.lists(st.one_of(puts, deletes, ranges), max_size=3).map(tuple),
    ),
    lambda inner: st.builds(
        TxnRequest,
        st.lists(compares, max_size=2).map(tuple),
        st.lists(st.one_of(puts, deletes, inner), max_size=3).map(tuple),
        st.lists(st.one_of(puts, deletes, inner), max_size=3).map(tuple),
    ),
    max_leaves=6,
)
operations = st.one_of(
    puts.map(lambda r: ("put", r)),
    deletes.map(lambda r: ("delete", r)),
    ranges.map(lambda r: ("range", r)),
    txns.map(lambda r: ("txn", r)),
    st.integers(-1, 40).map(lambda r: ("compact", r)),
    st.integers(1, 3).map(lambda r: ("grant", r)),
    st.integers(1, 3).map(lambda r: ("revoke", r)),
    st.floats(0, 100).map(lambda t: ("renew", t)),
)


def apply(store: KVStore, op: tuple[str, Any]) -> object:
    """Apply one generated operation; a refusal is returned as its error text."""
    kind, arg = op
    try:
        if kind == "put":
            return store.put(arg)
        if kind == "delete":
            return store.delete_range(arg)
        if kind == "range":
            return store.range(arg)
        if kind == "txn":
            return store.txn(arg)
        if kind == "compact":
            return store.compact(arg)
        if kind == "grant":
            return store.lease_grant(arg, 10)
        if kind == "revoke":
            return store.lease_revoke(arg)
        return [store.lease_renew(i, arg) for i in store.lease_leases()]
    except MVCCError as exc:
        return str(exc)


def observe(store: KVStore) -> tuple[object, ...]:
    """Everything a client could read, at every readable revision."""
    views: list[object] = [store.revision, store.compact_revision, store.hash_kv()]
    first = max(store.compact_revision, 1)
    for revision in range(first, store.revision + 1):
        views.append(store.range(RangeRequest(b"\x00", b"\x00", revision=revision)))
        views.append(store.events_since(revision, b"\x00", b"\x00"))
        if revision > store.compact_revision:
            views.append(store.hash_kv(revision))
    views.append([store.lease_time_to_live(i, keys=True) for i in store.lease_leases()])
    return tuple(views)


@settings(max_examples=80, deadline=None)
@given(st.lists(operations, max_size=40), st.integers(0, 40))
def test_replicas_and_restored_snapshots_agree(ops: list[tuple[str, Any]], cut: int) -> None:
    one, two = KVStore(), KVStore()
    restored: KVStore | None = None
    for i, op in enumerate(ops):
        if i == cut:
            restored = KVStore.from_bytes(one.to_bytes())
        results = [apply(one, op), apply(two, op)]
        if restored is not None:
            results.append(apply(restored, op))
        assert all(r == results[0] for r in results), (op, results)
    assert one.to_bytes() == two.to_bytes()
    assert observe(one) == observe(two)
    if restored is not None:
        assert restored.to_bytes() == one.to_bytes()
        assert observe(restored) == observe(one)


model_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys_, values),
        st.tuples(st.just("delete"), keys_, range_ends),
        st.tuples(st.just("range"), keys_, range_ends),
    ),
    max_size=60,
)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end


@settings(max_examples=150, deadline=None)
@given(model_ops)
def test_latest_state_matches_a_dict_model(ops: list[tuple[str, bytes, bytes]]) -> None:
    store = KVStore()
    model: dict[bytes, bytes] = {}
    versions: dict[bytes, int] = {}
    revision = 1
    for kind, key, arg in ops:
        if kind == "put":
            store.put(PutRequest(key, arg))
            model[key] = arg
            versions[key] = versions.get(key, 0) + 1
            revision += 1
        elif kind == "delete":
            gone = [k for k in model if in_range(k, key, arg)]
            assert store.delete_range(DeleteRangeRequest(key, arg)).deleted == len(gone)
            for k in gone:
                del model[k]
                del versions[k]
            revision += bool(gone)
        else:
            result = store.range(RangeRequest(key, arg))
            want = sorted((k, v) for k, v in model.items() if in_range(k, key, arg))
            assert [(kv.key, kv.value) for kv in result.kvs] == want
            assert [kv.version for kv in result.kvs] == [versions[k] for k, _ in want]
            assert result.count == len(want)
        assert store.revision == revision
