"""Unit tests of flow control and the progress tracker: inflights, progress state transitions, quorums."""

from __future__ import annotations

import pytest

from consensus.raft.progress import (
    Inflights,
    Progress,
    ProgressState,
    ProgressTracker,
    VoteResult,
)


def progress(state: ProgressState, match: int, next_index: int, size: int = 4) -> Progress:
    """A progress in PROBE or REPLICATE with the given match and next."""
    pr = Progress(next_index, Inflights(size), match=match)
    pr.state = state
    return pr


# -- Inflights ------------------------------------------------------------------
def test_inflights_count_limit() -> None:
    inf = Inflights(3)
    for i in (5, 6, 7):
        assert not inf.full()
        inf.add(i, 10)
    assert inf.full() and inf.count() == 3
    inf.free_le(4)  # nothing that old
    assert inf.count() == 3
    inf.free_le(6)
    assert inf.count() == 1 and not inf.full()
    inf.free_le(100)
    assert inf.count() == 0


def test_inflights_byte_limit() -> None:
    inf = Inflights(10, max_bytes=100)
    inf.add(1, 60)
    assert not inf.full()
    inf.add(2, 40)
    assert inf.full()
    inf.free_le(1)
    assert not inf.full()
    inf.reset()
    assert inf.count() == 0 and not inf.full()


def test_inflights_without_byte_limit() -> None:
    inf = Inflights(2, max_bytes=0)
    inf.add(1, 1 << 40)
    assert not inf.full()


# -- Progress state transitions ---------------------------------------------------------
def test_become_probe_from_replicate() -> None:
    pr = progress(ProgressState.REPLICATE, match=5, next_index=9)
    pr.inflights.add(8, 1)
    pr.become_probe()
    assert (pr.state, pr.match, pr.next, pr.inflights.count()) == (ProgressState.PROBE, 5, 6, 0)


@pytest.mark.parametrize(
    ("match", "pending", "want_next"),
    [(1, 10, 11), (11, 10, 12), (0, 0, 1)],
)
def test_become_probe_from_snapshot(match: int, pending: int, want_next: int) -> None:
    pr = Progress(1, Inflights(4), match=match)
    pr.become_snapshot(pending)
    assert pr.is_paused()
    pr.become_probe()
    assert (pr.state, pr.next, pr.pending_snapshot) == (ProgressState.PROBE, want_next, 0)


def test_become_replicate() -> None:
    pr = Progress(10, Inflights(4), match=3)
    pr.msg_app_flow_paused = True
    pr.become_replicate()
    assert (pr.state, pr.next, pr.msg_app_flow_paused) == (ProgressState.REPLICATE, 4, False)


def test_sent_entries_in_probe_pauses_only_when_sending_entries() -> None:
    pr = Progress(3, Inflights(4), match=2)
    pr.sent_entries(0, 0)
    assert not pr.is_paused()
    pr.sent_entries(2, 20)
    assert pr.is_paused()
    assert pr.next == 3  # a probe does not move next
    assert pr.inflights.count() == 0


def test_sent_entries_in_replicate_fills_the_window() -> None:
    pr = progress(ProgressState.REPLICATE, match=2, next_index=3, size=2)
    pr.sent_entries(2, 20)
    assert (pr.next, pr.inflights.count(), pr.is_paused()) == (5, 1, False)
    pr.sent_entries(0, 0)  # an empty append takes no slot
    assert pr.inflights.count() == 1
    pr.sent_entries(1, 10)
    assert (pr.next, pr.inflights.count(), pr.is_paused()) == (6, 2, True)


def test_maybe_update() -> None:
    pr = Progress(6, Inflights(4), match=3)
    pr.msg_app_flow_paused = True
    assert not pr.maybe_update(2)  # stale ack
    assert pr.msg_app_flow_paused
    assert pr.maybe_update(4)
    assert (pr.match, pr.next, pr.msg_app_flow_paused) == (4, 6, False)
    assert pr.maybe_update(8)
    assert (pr.match, pr.next) == (8, 9)


@pytest.mark.parametrize(
    ("match", "next_index", "rejected", "hint", "ok", "want_next"),
    [
        # stale: already matched beyond it
        (5, 10, 5, 5, False, 10),
        (5, 10, 4, 4, False, 10),
        # back to match + 1 whatever the hint
        (5, 10, 9, 9, True, 6),
        (5, 10, 9, 2, True, 6),
    ],
)
def test_maybe_decr_to_in_replicate(
    match: int, next_index: int, rejected: int, hint: int, ok: bool, want_next: int
) -> None:
    pr = progress(ProgressState.REPLICATE, match, next_index)
    assert pr.maybe_decr_to(rejected, hint) is ok
    assert pr.next == want_next


@pytest.mark.parametrize(
    ("match", "next_index", "rejected", "hint", "ok", "want_next"),
    [
        # rejection of something other than the last probe: stale
        (0, 10, 5, 5, False, 10),
        # the follower's hint brings next down
        (0, 10, 9, 9, True, 9),  # min(rejected, hint + 1)
        (0, 10, 9, 4, True, 5),
        (0, 10, 9, 0, True, 1),
        # never at or below match
        (3, 10, 9, 1, True, 4),
    ],
)
def test_maybe_decr_to_in_probe(
    match: int, next_index: int, rejected: int, hint: int, ok: bool, want_next: int
) -> None:
    pr = progress(ProgressState.PROBE, match, next_index)
    pr.msg_app_flow_paused = True
    assert pr.maybe_decr_to(rejected, hint) is ok
    assert pr.next == want_next
    assert pr.msg_app_flow_paused is not ok  # a useful rejection unpauses the probe


# -- ProgressTracker ---------------------------------------------------------------------------
def tracker(voters: dict[int, int], learners: dict[int, int] | None = None) -> ProgressTracker:
    trk = ProgressTracker(max_inflight=4, max_inflight_bytes=0)
    for nid, match in voters.items():
        trk.voters.add(nid)
        trk.progress[nid] = trk.new_progress(match + 1, is_learner=False, match=match)
    for nid, match in (learners or {}).items():
        trk.learners.add(nid)
        trk.progress[nid] = trk.new_progress(match + 1, is_learner=True, match=match)
    return trk


@pytest.mark.parametrize(
    ("voters", "learners", "want"),
    [
        ({1: 5}, {}, 5),
        ({1: 5, 2: 3}, {}, 3),
        ({1: 5, 2: 3, 3: 1}, {}, 3),
        ({1: 5, 2: 5, 3: 1, 4: 1}, {}, 1),
        ({1: 5, 2: 5, 3: 5, 4: 1}, {}, 5),
        # learners never count
        ({1: 5, 2: 1, 3: 1}, {4: 5, 5: 5}, 1),
        ({}, {}, 0),
    ],
)
def test_committed(voters: dict[int, int], learners: dict[int, int], want: int) -> None:
    assert tracker(voters, learners).committed() == want


@pytest.mark.parametrize(
    ("n", "votes", "want"),
    [
        (3, {1: True}, VoteResult.PENDING),
        (3, {1: True, 2: True}, VoteResult.WON),
        (3, {1: True, 2: False}, VoteResult.PENDING),
        (3, {1: True, 2: False, 3: False}, VoteResult.LOST),
        (4, {1: True, 2: True}, VoteResult.PENDING),
        (4, {1: True, 2: False, 3: False}, VoteResult.LOST),
        (1, {1: True}, VoteResult.WON),
    ],
)
def test_vote_result(n: int, votes: dict[int, bool], want: VoteResult) -> None:
    trk = tracker({i: 0 for i in range(1, n + 1)}, {9: 0})
    assert trk.vote_result({**votes, 9: True}) == want  # a learner's vote is ignored


def test_record_vote_keeps_the_first_answer() -> None:
    trk = tracker({1: 0, 2: 0, 3: 0})
    trk.record_vote(1, True)
    trk.record_vote(2, False)
    trk.record_vote(2, True)
    assert trk.tally_votes() == (1, 1, VoteResult.PENDING)


def test_quorum_active() -> None:
    trk = tracker({1: 0, 2: 0, 3: 0}, {4: 0})
    assert not trk.quorum_active(1)
    trk.progress[4].recent_active = True  # a learner does not help
    assert not trk.quorum_active(1)
    trk.progress[3].recent_active = True
    assert trk.quorum_active(1)
