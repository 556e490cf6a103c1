"""Txn: guards, branches, nesting, one revision per txn, and etcd's refusals."""

from __future__ import annotations

import pytest

from consensus.mvcc import (
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResult,
    DuplicateKeyError,
    EmptyKeyError,
    EventType,
    FutureRevisionError,
    KeyNotFoundError,
    KeyValue,
    KVStore,
    LeaseNotFoundError,
    PutRequest,
    PutResult,
    RangeRequest,
    RangeResult,
    TooManyOpsError,
    TxnRequest,
    TxnResult,
)
from consensus.mvcc.errors import MVCCError

from .helpers import get, keys, put

EQ, NE, GT, LT = (
    CompareResult.EQUAL,
    CompareResult.NOT_EQUAL,
    CompareResult.GREATER,
    CompareResult.LESS,
)


def guard(key: bytes, target: CompareTarget, result: CompareResult, operand: int | bytes,
          range_end: bytes = b"") -> Compare:
    return Compare(key, target, result, operand, range_end)


def holds(store: KVStore, *compares: Compare) -> bool:
    """Whether the guards hold, checked with a read-only txn (no revision either way)."""
    before = store.revision
    result = store.txn(TxnRequest(compares))
    assert store.revision == before
    return result.succeeded


@pytest.fixture
def store() -> KVStore:
    """a=1 (rev 2, lease 9), b=2 (rev 3), a=11 (rev 4); lease 9 granted."""
    s = KVStore()
    s.lease_grant(9, 100)
    put(s, b"a", b"1", lease=9)
    put(s, b"b", b"2")
    put(s, b"a", b"11", lease=9)
    return s


def test_compare_targets_and_results(store: KVStore) -> None:
    V, C, M, VAL, L = (
        CompareTarget.VERSION, CompareTarget.CREATE, CompareTarget.MOD,
        CompareTarget.VALUE, CompareTarget.LEASE,
    )
    assert holds(store, guard(b"a", V, EQ, 2))
    assert holds(store, guard(b"a", V, GT, 1))
    assert holds(store, guard(b"a", V, LT, 3))
    assert holds(store, guard(b"a", V, NE, 1))
    assert holds(store, guard(b"a", C, EQ, 2))
    assert holds(store, guard(b"a", M, EQ, 4))
    assert holds(store, guard(b"a", VAL, EQ, b"11"))
    assert holds(store, guard(b"a", VAL, GT, b"1"))
    assert holds(store, guard(b"a", L, EQ, 9))
    assert not holds(store, guard(b"b", L, NE, 0))
    assert not holds(store, guard(b"a", V, EQ, 2), guard(b"b", V, EQ, 2))  # conjunction


def test_compare_on_a_missing_key(store: KVStore) -> None:
    assert holds(store, guard(b"zz", CompareTarget.VERSION, EQ, 0))
    assert holds(store, guard(b"zz", CompareTarget.CREATE, EQ, 0))
    assert holds(store, guard(b"zz", CompareTarget.MOD, LT, 1))
    # A missing value is not the empty value: VALUE guards on missing keys always fail.
    assert not holds(store, guard(b"zz", CompareTarget.VALUE, EQ, b""))
    assert not holds(store, guard(b"zz", CompareTarget.VALUE, NE, b"x"))


def test_compare_over_a_range_needs_every_key(store: KVStore) -> None:
    assert holds(store, guard(b"a", CompareTarget.CREATE, GT, 1, b"c"))
    assert not holds(store, guard(b"a", CompareTarget.VERSION, EQ, 2, b"c"))
    assert holds(store, guard(b"a", CompareTarget.MOD, LT, 5, b"\x00"))
    assert holds(store, guard(b"x", CompareTarget.VERSION, EQ, 0, b"z"))  # empty range


def test_mismatched_operand_counts_as_unset(store: KVStore) -> None:
    assert holds(store, guard(b"b", CompareTarget.LEASE, EQ, b"junk"))  # lease 0
    assert not holds(store, guard(b"a", CompareTarget.VALUE, EQ, 11))  # value ""


def test_success_and_failure_branches(store: KVStore) -> None:
    txn = TxnRequest(
        (guard(b"a", CompareTarget.VALUE, EQ, b"11"),),
        (PutRequest(b"c", b"then"),),
        (PutRequest(b"c", b"else"),),
    )
    result = store.txn(txn)
    assert (result.succeeded, result.revision) == (True, 5)
    assert result.responses == [PutResult(5)]
    put(store, b"a", b"changed")
    result = store.txn(txn)
    assert (result.succeeded, result.revision) == (False, 7)
    assert get(store, b"c") == KeyValue(b"c", 5, 7, 2, b"else")


def test_a_txn_is_one_revision_with_sub_revisions_in_order(store: KVStore) -> None:
    seen: list[tuple[int, list[tuple[EventType, bytes]]]] = []
    store.subscribe(lambda rev, events: seen.append((rev, [(e.type, e.kv.key) for e in events])))
    result = store.txn(TxnRequest(success=(
        PutRequest(b"y", b"1"),
        DeleteRangeRequest(b"b"),
        PutRequest(b"x", b"2"),
        RangeRequest(b"x"),
        TxnRequest(success=(PutRequest(b"z"),)),
    )))
    assert result.revision == 5
    assert store.revision == 5
    assert seen == [(5, [(EventType.PUT, b"y"), (EventType.DELETE, b"b"),
                         (EventType.PUT, b"x"), (EventType.PUT, b"z")])]
    # The range saw the txn's own write, and reports the txn's revision.
    ranged = result.responses[3]
    assert isinstance(ranged, RangeResult)
    assert ranged.kvs == [KeyValue(b"x", 5, 5, 1, b"2")]
    assert ranged.revision == 5
    nested = result.responses[4]
    assert isinstance(nested, TxnResult)
    assert (nested.succeeded, nested.revision) == (True, 0)  # etcd leaves nested headers empty
    assert nested.responses == [PutResult(5)]


def test_read_only_txn_and_no_op_delete_make_no_revision(store: KVStore) -> None:
    result = store.txn(TxnRequest(success=(RangeRequest(b"a"), DeleteRangeRequest(b"nope"))))
    assert result.revision == 4
    assert store.revision == 4
    assert result.responses[1] == DeleteRangeResult(4, 0)
    # ...but once the txn has written, even a no-op delete reports the new revision.
    result = store.txn(TxnRequest(success=(PutRequest(b"n"), DeleteRangeRequest(b"nope"))))
    assert result.responses[1] == DeleteRangeResult(5, 0)


def test_guards_of_nested_txns_see_the_state_before_the_txn(store: KVStore) -> None:
    result = store.txn(TxnRequest(success=(
        PutRequest(b"new", b"1"),
        TxnRequest((guard(b"new", CompareTarget.VERSION, EQ, 0),),
                   (PutRequest(b"saw", b"nothing"),), (PutRequest(b"saw", b"it"),)),
    )))
    nested = result.responses[1]
    assert isinstance(nested, TxnResult)
    assert nested.succeeded
    assert get(store, b"saw") is not None
    assert get(store, b"saw").value == b"nothing"  # type: ignore[union-attr]


def test_range_in_txn_at_explicit_revision_reads_history(store: KVStore) -> None:
    result = store.txn(TxnRequest(success=(PutRequest(b"a", b"new"), RangeRequest(b"a", revision=4))))
    ranged = result.responses[1]
    assert isinstance(ranged, RangeResult)
    assert ranged.kvs[0].value == b"11"


def test_put_ignore_value_in_txn(store: KVStore) -> None:
    store.txn(TxnRequest(success=(PutRequest(b"a", ignore_value=True, ignore_lease=True),)))
    assert get(store, b"a") == KeyValue(b"a", 2, 5, 3, b"11", 9)


def rejects(store: KVStore, txn: TxnRequest, error: type[MVCCError]) -> None:
    before = store.to_bytes()
    with pytest.raises(error):
        store.txn(txn)
    assert store.to_bytes() == before


def test_too_many_ops() -> None:
    store = KVStore()
    ok = TxnRequest(success=tuple(PutRequest(b"k%d" % i) for i in range(128)))
    store.txn(ok)
    rejects(store, TxnRequest(success=tuple(PutRequest(b"k%d" % i) for i in range(129))),
            TooManyOpsError)
    rejects(store, TxnRequest(tuple(guard(b"a", CompareTarget.VERSION, EQ, 0) for _ in range(129))),
            TooManyOpsError)
    small = KVStore(max_txn_ops=2)
    rejects(small, TxnRequest(failure=(RangeRequest(b"a"),) * 3), TooManyOpsError)
    # A nested txn gets what its parent left: 2 - 1 = 1 op here.
    rejects(small, TxnRequest(success=(TxnRequest(success=(PutRequest(b"a"), PutRequest(b"b"))),)),
            TooManyOpsError)
    small.txn(TxnRequest(success=(TxnRequest(success=(PutRequest(b"a"),)),)))


@pytest.mark.parametrize(
    "ops",
    [
        (PutRequest(b"a"), PutRequest(b"a")),
        (DeleteRangeRequest(b"a"), PutRequest(b"a")),
        (PutRequest(b"b"), DeleteRangeRequest(b"a", b"c")),  # order within a level is irrelevant
        (TxnRequest(success=(PutRequest(b"a"),)), PutRequest(b"a")),
        (DeleteRangeRequest(b"a"), TxnRequest(success=(PutRequest(b"a"),))),
        (TxnRequest(success=(DeleteRangeRequest(b"a"),)), TxnRequest(failure=(PutRequest(b"a"),))),
        (TxnRequest(success=(PutRequest(b"a"),)), TxnRequest(success=(PutRequest(b"a"),))),
        (TxnRequest(success=(PutRequest(b"a"),), failure=(PutRequest(b"a"),)),
         TxnRequest(failure=(PutRequest(b"a"),))),
    ],
)
def test_duplicate_keys_are_refused(ops: tuple[PutRequest | DeleteRangeRequest | TxnRequest, ...]) -> None:
    rejects(KVStore(), TxnRequest(success=ops), DuplicateKeyError)
    rejects(KVStore(), TxnRequest(failure=ops), DuplicateKeyError)


@pytest.mark.parametrize(
    "ops",
    [
        (DeleteRangeRequest(b"a"), DeleteRangeRequest(b"a", b"c")),  # deletes may overlap
        (TxnRequest(success=(PutRequest(b"a"),), failure=(PutRequest(b"a"),)),),  # exclusive
        (PutRequest(b"b"), DeleteRangeRequest(b"a", b"\x00")),  # etcd: from-key never overlaps
        # etcd only checks a nested txn's deletes against puts after it:
        (TxnRequest(success=(PutRequest(b"a"),)), TxnRequest(success=(DeleteRangeRequest(b"a"),))),
    ],
)
def test_overlaps_etcd_accepts(ops: tuple[PutRequest | DeleteRangeRequest | TxnRequest, ...]) -> None:
    KVStore().txn(TxnRequest(success=ops))


def test_put_and_delete_branches_are_checked_separately() -> None:
    store = KVStore()
    store.txn(TxnRequest(success=(PutRequest(b"a"),), failure=(PutRequest(b"a"),)))


def test_from_key_delete_then_put_is_applied_in_order() -> None:
    store = KVStore()
    put(store, b"c", b"old")
    result = store.txn(TxnRequest(success=(DeleteRangeRequest(b"a", b"\x00"), PutRequest(b"c", b"new"))))
    assert result.revision == 3
    assert get(store, b"c") == KeyValue(b"c", 3, 3, 1, b"new")
    assert [e.type for e in store.changes(3)] == [EventType.DELETE, EventType.PUT]


def test_ignore_value_after_a_from_key_delete_is_refused_atomically() -> None:
    # etcd 3.4 accepts this txn and then panics while applying it.
    store = KVStore()
    put(store, b"c", b"old")
    txn = TxnRequest(success=(DeleteRangeRequest(b"a", b"\x00"), PutRequest(b"c", ignore_value=True)))
    rejects(store, txn, KeyNotFoundError)
    store.txn(TxnRequest(success=(
        DeleteRangeRequest(b"a", b"\x00"), PutRequest(b"c", b"v"), TxnRequest()
    )))


def test_path_checks(store: KVStore) -> None:
    rejects(store, TxnRequest(success=(PutRequest(b"x", lease=77),)), LeaseNotFoundError)
    rejects(store, TxnRequest(success=(PutRequest(b"x", ignore_value=True),)), KeyNotFoundError)
    rejects(store, TxnRequest(success=(PutRequest(b"y"), RangeRequest(b"a", revision=5))),
            FutureRevisionError)
    rejects(store, TxnRequest(compare=(guard(b"", CompareTarget.VERSION, EQ, 0),)), EmptyKeyError)
    rejects(store, TxnRequest(failure=(PutRequest(b""),)), EmptyKeyError)
    # Ops on the branch not taken are not path-checked...
    store.txn(TxnRequest(failure=(PutRequest(b"x", lease=77),)))
    # ...but request checks cover both branches.
    rejects(store, TxnRequest(failure=(PutRequest(b"", lease=77),)), EmptyKeyError)
    store.compact(3)
    rejects(store, TxnRequest(success=(RangeRequest(b"a", revision=2),)), CompactedError)
    # etcd compares a txn range's revision with the compaction revision even when negative.
    fresh = KVStore()
    put(fresh, b"a")
    rejects(fresh, TxnRequest(success=(RangeRequest(b"a", revision=-2),)), CompactedError)
    fresh.txn(TxnRequest(success=(RangeRequest(b"a", revision=-1),)))


def test_nested_txn_paths() -> None:
    store = KVStore()
    put(store, b"flag", b"on")
    inner = TxnRequest(
        (guard(b"flag", CompareTarget.VALUE, EQ, b"on"),),
        (PutRequest(b"inner", b"then"),),
        (PutRequest(b"inner", b"else"),),
    )
    outer = TxnRequest(
        (guard(b"flag", CompareTarget.VALUE, EQ, b"off"),),
        (PutRequest(b"outer", b"then"),),
        (inner, TxnRequest(success=(PutRequest(b"deep"),)), RangeRequest(b"inner")),
    )
    result = store.txn(outer)
    assert not result.succeeded
    assert keys(store) == [b"deep", b"flag", b"inner"]
    assert get(store, b"inner").value == b"then"  # type: ignore[union-attr]
    assert [type(r).__name__ for r in result.responses] == ["TxnResult", "TxnResult", "RangeResult"]
