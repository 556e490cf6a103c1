"""Leases: grants, attachment to keys, revocation in one revision, TTL bookkeeping."""

from __future__ import annotations

import pytest

from consensus.mvcc import (
    MAX_LEASE_TTL,
    DeleteRangeRequest,
    EventType,
    KVStore,
    LeaseExistsError,
    LeaseInfo,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    PutRequest,
    TxnRequest,
)

from .helpers import delete, get, keys, put


def test_grant_checks_and_minimum_ttl() -> None:
    store = KVStore(min_lease_ttl=2)
    assert store.lease_grant(10, 1) == LeaseInfo(10, 2, 2)
    assert store.lease_grant(11, 60) == LeaseInfo(11, 60, 60)
    with pytest.raises(LeaseExistsError):
        store.lease_grant(10, 5)
    with pytest.raises(LeaseNotFoundError):
        store.lease_grant(0, 5)  # the proposer picks the id
    with pytest.raises(LeaseTTLTooLargeError):
        store.lease_grant(12, MAX_LEASE_TTL + 1)
    assert store.lease_leases() == [10, 11]
    assert store.revision == 1  # grants make no revision


def test_keys_attach_and_detach() -> None:
    store = KVStore()
    store.lease_grant(1, 60)
    store.lease_grant(2, 60)
    put(store, b"a", lease=1)
    put(store, b"b", lease=1)
    put(store, b"c", lease=2)
    assert store.lease_time_to_live(1, keys=True).keys == (b"a", b"b")
    put(store, b"b")  # a plain put drops the lease
    store.put(PutRequest(b"a", b"v", ignore_lease=True))  # keeps it
    put(store, b"c", lease=1)  # moves it
    assert store.lease_time_to_live(1, keys=True).keys == (b"a", b"c")
    assert store.lease_time_to_live(2, keys=True).keys == ()
    delete(store, b"a")
    assert store.lease_time_to_live(1, keys=True).keys == (b"c",)
    assert store.lease_time_to_live(1).keys == ()  # only when asked


def test_revoke_deletes_attached_keys_in_one_revision() -> None:
    store = KVStore()
    store.lease_grant(1, 60)
    seen: list[tuple[int, list[bytes]]] = []
    store.subscribe(lambda rev, events: seen.append((rev, [e.kv.key for e in events])))
    store.txn(TxnRequest(success=tuple(PutRequest(k, lease=1) for k in (b"z", b"m", b"a"))))
    put(store, b"keep")
    assert store.lease_revoke(1) == 4
    assert seen[-1] == (4, [b"a", b"m", b"z"])  # key order: same sub revisions everywhere
    assert all(e.type == EventType.DELETE for e in store.changes(4))
    assert keys(store) == [b"keep"]
    assert store.lease_leases() == []
    with pytest.raises(LeaseNotFoundError):
        store.lease_revoke(1)
    with pytest.raises(LeaseNotFoundError):
        store.lease_time_to_live(1)
    with pytest.raises(LeaseNotFoundError):
        store.put(PutRequest(b"x", lease=1))


def test_revoking_a_lease_without_keys_makes_no_revision() -> None:
    store = KVStore()
    store.lease_grant(1, 60)
    put(store, b"a", lease=1)
    delete(store, b"a")
    assert store.lease_revoke(1) == 3
    assert store.revision == 3


def test_ttl_bookkeeping_is_driven_by_given_times() -> None:
    store = KVStore(min_lease_ttl=0)
    store.lease_grant(1, 10)
    store.lease_grant(2, 30)
    assert store.lease_time_to_live(1, now=100.0).ttl == 10  # no expiry set yet
    assert store.lease_renew(1, 100.0) == 10
    assert store.lease_time_to_live(1, now=103.5).ttl == 6
    assert store.lease_time_to_live(1, now=200.0).ttl == 0
    assert store.expired_leases(109.9) == []
    assert store.expired_leases(110.0) == [1]
    store.lease_checkpoint(2, 12)
    assert store.lease_time_to_live(2).ttl == 12
    store.lease_promote(1000.0)  # a new leader restarts the clocks from the checkpoints
    assert store.lease_time_to_live(2, now=1000.0).ttl == 12
    assert store.lease_time_to_live(1, now=1000.0).ttl == 10  # no checkpoint: a full TTL, as etcd
    assert store.expired_leases(1012.0) == [1, 2]  # 1010 before 1012
    store.lease_renew(2, 1000.0)  # a renew clears the checkpoint
    info = store.lease_time_to_live(2, now=1001.0)
    assert (info.ttl, info.granted_ttl) == (29, 30)
    with pytest.raises(LeaseNotFoundError):
        store.lease_renew(3, 0.0)
    with pytest.raises(LeaseNotFoundError):
        store.lease_checkpoint(3, 1)


def test_lease_state_survives_a_snapshot() -> None:
    store = KVStore()
    store.lease_grant(7, 60)
    put(store, b"a", lease=7)
    store.lease_renew(7, 50.0)
    store.lease_checkpoint(7, 40)
    restored = KVStore.from_bytes(store.to_bytes())
    assert restored.lease_time_to_live(7, keys=True) == store.lease_time_to_live(7, keys=True)
    assert restored.expired_leases(110.0) == [7]
    assert restored.lease_revoke(7) == 3
    assert get(restored, b"a") is None
    assert restored.delete_range(DeleteRangeRequest(b"a")).deleted == 0
