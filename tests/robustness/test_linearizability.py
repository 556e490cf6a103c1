"""The linearizability checker accepts correct histories and rejects hand-made broken ones."""

from __future__ import annotations

import math
import time

import pytest

from tests.robustness.builders import HistoryBuilder, kv, simulated_history
from tests.robustness.history import History
from tests.robustness.linearizability import (
    BudgetExceeded,
    KeyOp,
    check_history,
    linearizable,
    minimise,
    project,
)


def verdict(history: History) -> bool:
    return check_history(history).ok


def test_sequential_history_is_linearizable() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b.get("a", 2, 3, "v1", mod=2)
    b.put("a", "v2", 4, 5, revision=3)
    b.get("a", 6, 7, "v2", mod=3, version=2)
    b.delete("a", 8, 9, deleted=1, revision=4)
    b.get("a", 10, 11, None)
    assert verdict(b.history)


def test_stale_read_after_acknowledged_write_is_caught() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b.put("a", "v2", 2, 3, revision=3)
    b.get("a", 4, 5, "v1", mod=2)  # v2 was acknowledged before this read began
    result = check_history(b.history)
    assert not result.ok
    (failure,) = result.failures
    assert failure.key == "a"
    # The witness: both writes had to happen (their results do not matter) before the read.
    assert {k.op_id for k in failure.witness} == {0, 1, 2}
    assert [k.op_id for k in failure.witness if k.out is not None] == [2]
    assert "NOT linearizable" in result.report(b.history)


def test_concurrent_read_may_see_either_value() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b.put("a", "v2", 2, 6, revision=3)
    b.get("a", 3, 4, "v1", mod=2, client=1)
    b.get("a", 3.5, 5, "v2", mod=3, version=2, client=2)
    assert verdict(b.history)


def test_reads_must_not_go_back_in_time() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b.put("a", "v2", 2, 10, revision=3)
    b.get("a", 3, 4, "v2", mod=3, version=2, client=1)
    b.get("a", 5, 6, "v1", mod=2, client=2)  # after someone saw v2
    assert not verdict(b.history)


def test_unknown_write_may_or_may_not_take_effect() -> None:
    observed = HistoryBuilder()
    observed.put("a", "v1", 0, None)
    observed.get("a", 5, 6, "v1", mod=2)
    assert verdict(observed.history)
    unobserved = HistoryBuilder()
    unobserved.put("a", "v1", 0, None)
    unobserved.get("a", 5, 6, None)
    assert verdict(unobserved.history)


def test_unknown_write_cannot_take_effect_before_it_was_invoked() -> None:
    b = HistoryBuilder()
    b.get("a", 0, 1, "v1", mod=2)
    b.put("a", "v1", 2, None)
    assert not verdict(b.history)


def test_value_from_nowhere_is_caught() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b.get("a", 2, 3, "zzz", mod=2)
    assert not verdict(b.history)


def test_failed_write_must_have_no_effect() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b._add("put", 2, 3, {"key": "a", "value": "v2", "size": 8, "lease": 0}, {}, 0, status="failed")
    b.get("a", 4, 5, "v2", mod=3, version=2)
    assert not verdict(b.history)


def test_revisions_of_writes_to_one_key_only_grow() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=5)
    b.put("a", "v2", 2, 3, revision=4)
    assert not verdict(b.history)


def test_version_must_count_puts_since_creation() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b.put("a", "v2", 2, 3, revision=3)
    b.get("a", 4, 5, "v2", mod=3, version=1)
    assert not verdict(b.history)


def test_two_cas_on_the_same_revision_cannot_both_succeed() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b.cas("a", "mod", 2, "x", 2, 4, succeeded=True, revision=3, client=1)
    b.cas("a", "mod", 2, "y", 2.5, 4.5, succeeded=True, revision=4, client=2)
    result = check_history(b.history)
    assert not result.ok
    witness = result.failures[0].witness
    assert {1, 2} <= {k.op_id for k in witness if k.out is not None}


def test_cas_failure_branch_must_read_the_current_value() -> None:
    good = HistoryBuilder()
    good.put("a", "v1", 0, 1, revision=2)
    good.cas("a", "mod", 7, "x", 2, 3, succeeded=False, revision=2, kvs=[kv("a", "v1", 2)])
    assert verdict(good.history)
    bad = HistoryBuilder()
    bad.put("a", "v1", 0, 1, revision=2)
    bad.cas("a", "mod", 7, "x", 2, 3, succeeded=False, revision=2, kvs=[])
    assert not verdict(bad.history)


def test_cas_refused_although_the_compare_held_is_caught() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b.cas("a", "mod", 2, "x", 2, 3, succeeded=False, revision=2, kvs=[kv("a", "v1", 2)])
    assert not verdict(b.history)


def test_cas_create_if_absent_and_value_compare() -> None:
    b = HistoryBuilder()
    b.cas("a", "version", 0, "v1", 0, 1, succeeded=True, revision=2)
    b.cas("a", "value", "v1", "v2", 2, 3, succeeded=True, revision=3)
    b.cas("a", "version", 0, "v3", 4, 5, succeeded=False, revision=3, kvs=[kv("a", "v2", 3, version=2)])
    assert verdict(b.history)


def test_cas_after_an_unknown_put_whose_revision_is_unknown() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, None)
    b.cas("a", "mod", 9, "x", 5, 6, succeeded=True, revision=10)
    b.get("a", 7, 8, "x", mod=10, version=2)
    assert verdict(b.history)


def test_delete_of_absent_key_deletes_nothing() -> None:
    b = HistoryBuilder()
    b.delete("a", 0, 1, deleted=1, revision=2)
    assert not verdict(b.history)


def test_keys_of_a_revoked_lease_are_gone() -> None:
    b = HistoryBuilder()
    b.lease(7, 0)
    b.put("a", "v1", 1, 2, revision=2, lease=7)
    b.revoke(7, 3, 4, revision=3)
    b.get("a", 5, 6, None)
    assert verdict(b.history)
    b.get("a", 7, 8, "v1", mod=2)  # the key came back (or never went)
    assert not verdict(b.history)


def test_a_kept_alive_lease_must_not_expire_but_others_may() -> None:
    kept = HistoryBuilder()
    kept.lease(7, 0, keep_alive=True)
    kept.put("a", "v1", 1, 2, revision=2, lease=7)
    kept.get("a", 50, 51, None)
    assert not verdict(kept.history)
    expiring = HistoryBuilder()
    expiring.lease(7, 0, keep_alive=False, ttl=2)
    expiring.put("a", "v1", 1, 2, revision=2, lease=7)
    expiring.get("a", 50, 51, None)
    assert verdict(expiring.history)


def test_a_range_list_is_a_read_of_every_key_in_it() -> None:
    b = HistoryBuilder()
    b.put("k1", "v1", 0, 1, revision=2)
    b.put("k2", "v2", 2, 3, revision=3)
    b.range("k", "l", 4, 5, [kv("k2", "v2", 3)], revision=3)  # k1 missing
    result = check_history(b.history)
    assert [f.key for f in result.failures] == ["k1"]


def test_serializable_reads_are_not_judged_by_this_checker() -> None:
    b = HistoryBuilder()
    b.put("a", "v1", 0, 1, revision=2)
    b.get("a", 2, 3, None, serializable=True)
    assert verdict(b.history)


@pytest.mark.parametrize("seed", range(12))
def test_simulated_linearizable_histories_pass(seed: int) -> None:
    history = simulated_history(seed)
    result = check_history(history)
    assert result.ok, result.report(history)
    assert not result.undecided


@pytest.mark.parametrize("seed", range(8))
def test_one_stale_read_in_a_simulated_history_is_caught(seed: int) -> None:
    history = simulated_history(seed, clients=3, ops_per_client=40)
    # Make the last read that saw a value return what an earlier read (finished before
    # this one began) saw of a value overwritten since: a stale read.
    reads = [o for o in history.operations if o.kind == "get" and o.result["kvs"]]
    target = reads[-1]
    current = target.result["kvs"][0]
    earlier = [
        r for r in reads
        if r.args["key"] == target.args["key"] and r.ret is not None and r.ret < target.call
        and r.result["kvs"][0]["mod"] < current["mod"]
    ]
    assert earlier, "this seed's history has no earlier read of an older value to replay"
    target.result["kvs"] = [dict(earlier[0].result["kvs"][0])]
    result = check_history(history)
    assert not result.ok
    witness = result.failures[0].witness
    known = [k for k in witness if k.out is not None]
    assert target.id in {k.op_id for k in known}
    assert len(known) <= 4, result.report(history)


def test_minimal_witness_of_a_long_history_is_small() -> None:
    history = simulated_history(3, clients=5, ops_per_client=100, keys=1, unknown_rate=0.0)
    ops = project(history)["k0"]
    # Append an impossible read at the end: it saw the very first value written.
    first = next(o for o in ops if o.kind == "put" and o.out is not None)
    last = max(o.ret for o in ops if o.ret != math.inf)
    bad = KeyOp(10**6, last + 1, last + 2, "read", (), (first.arg[0], first.out[0], 1))  # type: ignore[index]
    assert not linearizable([*ops, bad])
    witness = minimise([*ops, bad])
    assert bad.op_id in {w.op_id for w in witness}
    assert len([w for w in witness if w.out is not None]) <= 4
    assert len(witness) <= 12


def test_checker_is_fast_on_a_busy_key() -> None:
    history = simulated_history(11, clients=8, ops_per_client=150, keys=1, unknown_rate=0.02)
    started = time.monotonic()
    result = check_history(history)
    assert result.ok, result.report(history)
    assert time.monotonic() - started < 20


def test_search_budget_is_reported_as_undecided() -> None:
    history = simulated_history(5, clients=6, ops_per_client=40, keys=1)
    ops = project(history)["k0"]
    with pytest.raises(BudgetExceeded):
        linearizable(ops, budget=10)
    result = check_history(history, budget=10)
    assert result.ok and result.undecided
