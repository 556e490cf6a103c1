"""The watch, replay and lease checkers accept good streams and reject hand-made broken ones."""

from __future__ import annotations

from pathlib import Path

from tests.robustness.builders import (
    HistoryBuilder,
    add_watch,
    delete_event,
    kv,
    put_event,
)
from tests.robustness.history import History
from tests.robustness.judge import judge
from tests.robustness.judge import main as judge_main
from tests.robustness.lease_checks import check_leases
from tests.robustness.replay import build_reference, check_replay, resolve_unknown
from tests.robustness.watch_checks import check_watches


def base() -> HistoryBuilder:
    """Three writes (revisions 2, 3, 4: a put, a put, a delete) and one good whole-prefix watch."""
    b = HistoryBuilder()
    b.history.meta.update(prefix="k", prefix_end="l")
    b.put("k1", "a", 0, 1, revision=2)
    b.put("k2", "b", 2, 3, revision=3)
    b.delete("k1", 4, 5, deleted=1, revision=4)
    add_watch(b.history, [[put_event("k1", "a", 2)], [put_event("k2", "b", 3)], [delete_event("k1", 4)]])
    return b


def watch_violations(history: History) -> list[str]:
    return check_watches(history, build_reference(history)).violations


def test_good_streams_pass_every_check() -> None:
    b = base()
    # A second watcher that batched two revisions, got a progress notification, and one from 3.
    add_watch(b.history, [[put_event("k1", "a", 2), put_event("k2", "b", 3)], 3, [delete_event("k1", 4)], 4])
    add_watch(b.history, [[put_event("k2", "b", 3)], [delete_event("k1", 4)]], start_revision=3)
    ref = build_reference(b.history)
    assert check_watches(b.history, ref).ok, check_watches(b.history, ref).report()
    replay = check_replay(b.history, ref)
    assert replay.ok, replay.report()
    assert replay.checked_writes == 3


def test_out_of_order_events_are_caught() -> None:
    b = base()
    add_watch(b.history, [[put_event("k2", "b", 3)], [put_event("k1", "a", 2)], [delete_event("k1", 4)]])
    assert any("out of order" in v for v in watch_violations(b.history))


def test_duplicate_events_are_caught() -> None:
    b = base()
    add_watch(b.history, [[put_event("k1", "a", 2)], [put_event("k1", "a", 2)], [put_event("k2", "b", 3)]])
    assert any("delivered twice" in v for v in watch_violations(b.history))


def test_a_revision_split_across_batches_is_caught() -> None:
    b = HistoryBuilder()
    b.history.meta.update(prefix="k", prefix_end="l")
    b._add("txn", 0, 1, {"key": "k1", "compare": "version", "operand": 0, "value": "a", "size": 8},
           {"succeeded": True, "revision": 2}, 0)
    whole = [put_event("k1", "a", 2), put_event("k2", "b", 2)]
    add_watch(b.history, [whole])
    add_watch(b.history, [[whole[0]], [whole[1]]])
    assert any("split across batches" in v for v in watch_violations(b.history))


def test_a_missing_event_is_caught() -> None:
    b = base()
    add_watch(b.history, [[put_event("k1", "a", 2)], [delete_event("k1", 4)]])
    violations = watch_violations(b.history)
    assert any("differs from the reference" in v for v in violations), violations


def test_an_event_before_the_start_revision_is_caught() -> None:
    b = base()
    add_watch(b.history, [[put_event("k1", "a", 2)], [put_event("k2", "b", 3)]], start_revision=3)
    assert any("before the start revision" in v for v in watch_violations(b.history))


def test_a_resumed_watch_must_see_exactly_the_events_from_its_revision() -> None:
    b = base()
    add_watch(b.history, [[delete_event("k1", 4)]], start_revision=3)  # skipped revision 3
    assert any("differs from the reference" in v for v in watch_violations(b.history))


def test_a_progress_notification_ahead_of_events_is_caught() -> None:
    b = base()
    add_watch(b.history, [[put_event("k1", "a", 2)], 4, [put_event("k2", "b", 3)], [delete_event("k1", 4)]])
    violations = watch_violations(b.history)
    assert any("progress notification at revision 4 before" in v for v in violations), violations
    assert any("after a progress notification" in v for v in violations)


def test_watchers_that_disagree_are_caught() -> None:
    b = base()
    add_watch(b.history, [[put_event("k1", "a", 2)], [put_event("k2", "OTHER", 3)], [delete_event("k1", 4)]])
    ref = build_reference(b.history)
    assert ref.conflicts
    assert not check_replay(b.history, ref).ok


def test_an_event_outside_the_watched_range_is_caught() -> None:
    b = base()
    add_watch(b.history, [[put_event("k1", "a", 2)]], key="k1", range_end="")
    add_watch(b.history, [[put_event("k2", "b", 3)]], key="k1", range_end="")
    assert any("outside the watched range" in v for v in watch_violations(b.history))


def test_a_watch_that_dies_for_no_reason_is_caught() -> None:
    b = base()
    add_watch(b.history, [[put_event("k1", "a", 2)]], error="UnavailableError: gave up")
    assert any("ended with UnavailableError" in v for v in watch_violations(b.history))


def test_a_lost_acknowledged_write_is_caught() -> None:
    b = base()
    b.put("k2", "c", 6, 7, revision=5)  # acknowledged, never delivered; the watch covers revision 5
    b.history.watches[0].batches.append(b.history.watches[0].batches[0].__class__(110.0, 5))
    result = check_replay(b.history)
    assert result.lost_writes, result.report()


def test_a_phantom_and_a_duplicated_write_are_caught() -> None:
    b = base()
    b.history.watches[0].batches.append(
        b.history.watches[0].batches[0].__class__(110.0, 0, [put_event("k2", "zzz", 5, version=2, create=3)])
    )
    b.history.watches[0].batches.append(
        b.history.watches[0].batches[0].__class__(111.0, 0, [put_event("k2", "b", 6, version=3, create=3)])
    )
    result = check_replay(b.history)
    assert any("never written" in p for p in result.phantom_writes)
    assert any("written 2 times" in p for p in result.phantom_writes)


def test_a_revision_gap_is_caught() -> None:
    b = base()
    w = b.history.watches[0]
    w.batches[2].events = [delete_event("k1", 5)]
    assert check_replay(b.history).gaps


def test_reads_must_equal_the_state_at_their_revision() -> None:
    b = base()
    b.range("k", "l", 3.5, 3.6, [kv("k1", "a", 2), kv("k2", "b", 3)], revision=3, serializable=True)
    assert check_replay(b.history).ok
    b.range("k", "l", 3.5, 3.6, [kv("k2", "b", 3)], revision=3, serializable=True)  # not a snapshot
    b.get("k1", 5.5, 5.6, "a", mod=2, revision=4, serializable=True)  # deleted at 4
    result = check_replay(b.history)
    assert len(result.bad_reads) == 2, result.report()


def test_unknown_writes_are_resolved_by_the_watch() -> None:
    b = base()
    b.history.meta["final_revision"] = 5
    b.put("k2", "seen", 6, None)
    b.put("k2", "never", 6.5, None)
    w = b.history.watches[0]
    w.batches.append(w.batches[0].__class__(7.0, 0, [put_event("k2", "seen", 5, version=2, create=3)]))
    resolved = resolve_unknown(b.history, build_reference(b.history))
    values = {o.args.get("value"): o for o in resolved.operations}
    assert values["seen"].status == "ok" and values["seen"].result["revision"] == 5
    assert values["seen"].ret == 7.0
    assert "never" not in values


def test_lease_checks_accept_a_revoke_and_an_expiry() -> None:
    b = HistoryBuilder()
    b.history.meta.update(prefix="k", prefix_end="l")
    b.lease(7, 0, keep_alive=True)
    b.lease(8, 0, keep_alive=False, ttl=2)
    b.put("k1", "a", 1, 2, revision=2, lease=7)
    b.put("k2", "b", 1, 2, revision=3, lease=8)
    b.revoke(7, 3, 4, revision=4)
    add_watch(b.history, [[put_event("k1", "a", 2, lease=7)], [put_event("k2", "b", 3, lease=8)],
                          [delete_event("k1", 4)], [delete_event("k2", 5)]])
    b.history.leases[0].final_ttl = -1
    b.history.leases[1].final_ttl = -1
    result = check_leases(b.history, build_reference(b.history))
    assert result.ok, result.report()


def test_a_kept_alive_lease_that_expires_is_caught() -> None:
    b = HistoryBuilder()
    b.history.meta.update(prefix="k", prefix_end="l")
    b.lease(7, 0, keep_alive=True)
    b.put("k1", "a", 1, 2, revision=2, lease=7)
    add_watch(b.history, [[put_event("k1", "a", 2, lease=7)], [delete_event("k1", 3)]])
    b.history.leases[0].lost = True
    b.history.leases[0].final_ttl = -1
    result = check_leases(b.history, build_reference(b.history))
    assert any("expired while it was being renewed" in v for v in result.violations)
    assert any("reported lost" in v for v in result.violations)
    assert any("gone after the run" in v for v in result.violations)


def test_keys_left_behind_by_a_revoke_are_caught() -> None:
    b = HistoryBuilder()
    b.history.meta.update(prefix="k", prefix_end="l")
    b.lease(7, 0, keep_alive=True)
    b.put("k1", "a", 1, 2, revision=2, lease=7)
    b.put("k2", "b", 1, 2, revision=3, lease=7)
    b.revoke(7, 3, 4, revision=4)
    add_watch(b.history, [[put_event("k1", "a", 2, lease=7)], [put_event("k2", "b", 3, lease=7)],
                          [delete_event("k1", 4)]])  # k2 survived the revoke
    result = check_leases(b.history, build_reference(b.history))
    assert any("still attached" in v for v in result.violations), result.report()


def test_an_expiring_lease_that_lives_on_is_caught() -> None:
    b = HistoryBuilder()
    b.lease(8, 0, keep_alive=False, ttl=2)
    b.history.leases[0].final_ttl = 5
    b.history.final["keys"] = {"k1": 8}
    result = check_leases(b.history, build_reference(b.history))
    assert len(result.violations) == 2


def test_a_saved_history_is_judged_the_same_after_loading(tmp_path: Path) -> None:
    b = base()
    b.history.meta.update(scenario="hand-made", seed=7, target="flagstaff", size=3,
                          schedule=[{"fault": "kill", "target": "leader"}])
    b.get("k2", 6, 7, None, revision=4)  # k2 was written at revision 3 and never deleted
    verdict = judge(b.history)
    assert not verdict.ok
    path = b.history.save(tmp_path / "h.json")
    again = judge(History.load(path))
    assert again.sections == verdict.sections
    report = verdict.report(b.history)
    assert "seed 7" in report and '"fault": "kill"' in report and "NOT linearizable" in report
    assert judge_main([str(path)]) == 1


def test_historical_reads_must_match_the_revision_they_asked_for() -> None:
    b = base()
    good = b.get("k1", 6, 7, "a", mod=2, revision=4)
    good.args["revision"] = 3  # k1 still held "a" at revision 3
    assert check_replay(b.history).ok
    bad = b.get("k1", 8, 9, None, revision=4)
    bad.args["revision"] = 2  # but it existed at revision 2
    result = check_replay(b.history)
    assert len(result.bad_reads) == 1 and "revision 2" in result.bad_reads[0]


def test_limited_ranges_count_and_more_must_agree_with_the_revision() -> None:
    b = base()
    op = b.range("k", "l", 3.5, 3.6, [kv("k1", "a", 2)], revision=3)
    op.args["limit"] = 1
    op.result.update(count=2, more=True)
    assert check_replay(b.history).ok
    op.result.update(count=1, more=False)  # hides the second key
    result = check_replay(b.history)
    assert any("more=False" in r and "count=1" in r for r in result.bad_reads), result.report()


def test_a_read_refused_as_compacted_needs_a_compaction_that_far() -> None:
    b = base()
    op = b._add("get", 6, 7, {"key": "k1", "serializable": False, "revision": 3}, {}, 0, status="failed")
    op.error = "CompactedError(...)"
    assert check_replay(b.history).bad_reads
    b._add("compact", 5, 5.5, {"revision": 3}, {"revision": 4}, 0)
    assert check_replay(b.history).ok


def test_prev_kv_must_be_the_key_before_the_event() -> None:
    b = base()
    w = add_watch(b.history, [[put_event("k2", "b", 3)], [delete_event("k1", 4)]], start_revision=3)
    w.prev_kv = True
    w.batches[1].events[0].prev = ["a", 2, 2, 1, 0]
    assert not watch_violations(b.history)
    w.batches[1].events[0].prev = ["zzz", 2, 2, 1, 0]
    w.batches[0].events[0].prev = ["b", 3, 3, 1, 0]  # k2 did not exist before revision 3
    assert len([v for v in watch_violations(b.history) if "prev_kv" in v]) == 2
