"""Unit tests of the Raft log: the unstable tail, conflicts, appends, slicing, commit and apply bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.raft.log import RaftLog, Unstable
from consensus.raft.storage import MemoryStorage
from consensus.raft.types import (
    CompactedError,
    Entry,
    RaftError,
    Snapshot,
    SnapshotMetadata,
)


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    """Entries from (index, term) pairs."""
    return [Entry(term=t, index=i) for i, t in pairs]


def ids(entries: list[Entry]) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in entries]


def log_with(
    stable: list[tuple[int, int]],
    unstable: list[tuple[int, int]] | None = None,
    snapshot: tuple[int, int] | None = None,
) -> RaftLog:
    """A log whose storage holds ``stable`` (after ``snapshot``) and whose unstable tail holds ``unstable``."""
    storage = MemoryStorage()
    if snapshot is not None:
        storage.apply_snapshot(
            Snapshot(metadata=SnapshotMetadata(index=snapshot[0], term=snapshot[1]))
        )
    storage.append(ents(*stable))
    log = RaftLog(storage)
    if unstable:
        log.append(ents(*unstable))
    return log


# -- Unstable ---------------------------------------------------------------------
def test_unstable_positions() -> None:
    u = Unstable(5)
    assert (u.maybe_first_index(), u.maybe_last_index(), u.maybe_term(5)) == (None, None, None)
    u.truncate_and_append(ents((5, 1), (6, 1)))
    assert (u.maybe_first_index(), u.maybe_last_index(), u.maybe_term(6)) == (None, 6, 1)
    assert u.maybe_term(4) is None and u.maybe_term(7) is None
    snap = Snapshot(metadata=SnapshotMetadata(index=10, term=3))
    u.restore(snap)
    assert (u.offset, u.entries) == (11, [])
    assert (u.maybe_first_index(), u.maybe_last_index(), u.maybe_term(10)) == (11, 10, 3)
    assert u.maybe_term(9) is None
    u.stable_snap_to(9)
    assert u.snapshot is snap
    u.stable_snap_to(10)
    assert u.snapshot is None


@pytest.mark.parametrize(
    ("append", "want_offset", "want"),
    [
        ([(7, 2)], 5, [(5, 1), (6, 1), (7, 2)]),  # directly after
        ([(6, 2), (7, 2)], 5, [(5, 1), (6, 2), (7, 2)]),  # truncate inside
        ([(5, 2)], 5, [(5, 2)]),  # replace from the offset
        ([(4, 2), (5, 2)], 4, [(4, 2), (5, 2)]),  # below the offset: storage overwritten too
    ],
)
def test_unstable_truncate_and_append(
    append: list[tuple[int, int]], want_offset: int, want: list[tuple[int, int]]
) -> None:
    u = Unstable(5)
    u.truncate_and_append(ents((5, 1), (6, 1)))
    u.truncate_and_append(ents(*append))
    assert u.offset == want_offset
    assert ids(u.entries) == want


@pytest.mark.parametrize(
    ("index", "term", "want_offset", "want_len"),
    [
        (5, 1, 6, 1),  # persisted the first
        (6, 1, 7, 0),  # persisted all
        (6, 2, 5, 2),  # term mismatch: the entry was replaced meanwhile
        (4, 1, 5, 2),  # below the offset: nothing to do
        (9, 1, 5, 2),  # beyond the tail
    ],
)
def test_unstable_stable_to(index: int, term: int, want_offset: int, want_len: int) -> None:
    u = Unstable(5)
    u.truncate_and_append(ents((5, 1), (6, 1)))
    u.stable_to(index, term)
    assert (u.offset, len(u.entries)) == (want_offset, want_len)


# -- positions and terms ----------------------------------------------------------------
def test_positions_across_storage_and_unstable() -> None:
    log = log_with([(4, 4), (5, 5)], [(6, 5), (7, 6)], snapshot=(3, 3))
    assert (log.first_index(), log.last_index(), log.last_term()) == (4, 7, 6)
    assert [log.term(i) for i in range(2, 9)] == [None, 3, 4, 5, 5, 6, None]
    assert log.committed == log.applied == 3


def test_pending_snapshot_moves_the_first_index() -> None:
    log = log_with([(1, 1), (2, 1)])
    log.restore(Snapshot(metadata=SnapshotMetadata(index=10, term=4)))
    assert (log.first_index(), log.last_index(), log.committed) == (11, 10, 10)
    assert log.term(10) == 4 and log.term(2) is None
    assert log.has_pending_snapshot()
    assert log.next_committed_entries() == [] and not log.has_next_committed_entries()


def test_is_up_to_date() -> None:
    log = log_with([(1, 1), (2, 2), (3, 2)])
    assert log.is_up_to_date(3, 2)
    assert log.is_up_to_date(4, 2)
    assert not log.is_up_to_date(2, 2)
    assert log.is_up_to_date(1, 3)  # a higher last term wins whatever the length
    assert not log.is_up_to_date(9, 1)


# -- conflicts ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("incoming", "want"),
    [
        ([], 0),
        ([(1, 1), (2, 2), (3, 3)], 0),  # all match
        ([(2, 2), (3, 3)], 0),
        ([(3, 3)], 0),
        ([(2, 2), (3, 3), (4, 4), (5, 4)], 4),  # new entries beyond the end
        ([(4, 4)], 4),
        ([(1, 4), (2, 4)], 1),  # conflicts
        ([(2, 1), (3, 4), (4, 4)], 2),
        ([(3, 1), (4, 2), (5, 4)], 3),
    ],
)
def test_find_conflict(incoming: list[tuple[int, int]], want: int) -> None:
    assert log_with([(1, 1), (2, 2), (3, 3)]).find_conflict(ents(*incoming)) == want


# Log: (index, term) 1/1 2/2 3/2 4/2 5/5 6/5 7/6 (after etcd's TestFindConflictByTerm shape)
LOG_FOR_TERM_SCAN = [(1, 1), (2, 2), (3, 2), (4, 2), (5, 5), (6, 5), (7, 6)]


@pytest.mark.parametrize(
    ("index", "term", "want"),
    [
        (7, 6, (7, 6)),
        (7, 7, (7, 6)),  # term above ours: this very index
        (7, 5, (6, 5)),  # skip the term-6 entry
        (7, 4, (4, 2)),  # skip all of term 5 and 6 in one go
        (7, 2, (4, 2)),
        (7, 1, (1, 1)),
        (7, 0, (0, 0)),
        (3, 5, (3, 2)),
        (9, 6, (9, 0)),  # beyond our log: unknown term
    ],
)
def test_find_conflict_by_term(index: int, term: int, want: tuple[int, int]) -> None:
    assert log_with(LOG_FOR_TERM_SCAN).find_conflict_by_term(index, term) == want


def test_find_conflict_by_term_at_a_compacted_index() -> None:
    log = log_with([(4, 4), (5, 5)], snapshot=(3, 3))
    assert log.find_conflict_by_term(5, 3) == (3, 3)  # the snapshot's term is still known
    assert log.find_conflict_by_term(5, 2) == (2, 0)  # below it: unknown


# -- maybe_append -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("index", "log_term", "commit", "incoming", "want_last", "want_commit", "want_log"),
    [
        # prev mismatch: rejected, nothing changes
        (3, 2, 3, [(4, 4)], None, 1, [(1, 1), (2, 2), (3, 3)]),
        (4, 3, 3, [(5, 4)], None, 1, [(1, 1), (2, 2), (3, 3)]),
        # prev matches, no entries: commit moves to min(commit, last new)
        (3, 3, 3, [], 3, 3, [(1, 1), (2, 2), (3, 3)]),
        (3, 3, 4, [], 3, 3, [(1, 1), (2, 2), (3, 3)]),  # not beyond the leader's prefix
        (2, 2, 3, [], 2, 2, [(1, 1), (2, 2), (3, 3)]),  # nor beyond what it verified
        # new entries
        (3, 3, 4, [(4, 4)], 4, 4, [(1, 1), (2, 2), (3, 3), (4, 4)]),
        (3, 3, 3, [(4, 4), (5, 4)], 5, 3, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 4)]),
        # already present: nothing truncated (a stale append must not cut our tail)
        (1, 1, 3, [(2, 2)], 2, 2, [(1, 1), (2, 2), (3, 3)]),
        # conflict above commit: truncate and replace
        (1, 1, 1, [(2, 4), (3, 4)], 3, 1, [(1, 1), (2, 4), (3, 4)]),
        (2, 2, 3, [(3, 4), (4, 4)], 4, 3, [(1, 1), (2, 2), (3, 4), (4, 4)]),
    ],
)
def test_maybe_append(
    index: int,
    log_term: int,
    commit: int,
    incoming: list[tuple[int, int]],
    want_last: int | None,
    want_commit: int,
    want_log: list[tuple[int, int]],
) -> None:
    log = log_with([(1, 1), (2, 2), (3, 3)])
    log.commit_to(1)
    assert log.maybe_append(index, log_term, commit, ents(*incoming)) == want_last
    assert log.committed == want_commit
    assert ids(log.slice(1, log.last_index() + 1, None)) == want_log


def test_maybe_append_refuses_to_overwrite_committed() -> None:
    log = log_with([(1, 1), (2, 2), (3, 3)])
    log.commit_to(2)
    with pytest.raises(RaftError, match="conflicts with committed"):
        log.maybe_append(1, 1, 3, ents((2, 4)))


def test_append_below_commit_is_refused() -> None:
    log = log_with([(1, 1), (2, 2)])
    log.commit_to(2)
    with pytest.raises(RaftError):
        log.append(ents((2, 3)))


# -- slice -----------------------------------------------------------------------------------
def test_slice_across_storage_and_unstable() -> None:
    log = log_with([(4, 4), (5, 5), (6, 5)], [(7, 6), (8, 6)], snapshot=(3, 3))
    one = Entry(0, 0).size()
    assert ids(log.slice(4, 9, None)) == [(4, 4), (5, 5), (6, 5), (7, 6), (8, 6)]
    assert ids(log.slice(5, 8, None)) == [(5, 5), (6, 5), (7, 6)]
    assert ids(log.slice(7, 9, None)) == [(7, 6), (8, 6)]  # unstable only
    assert ids(log.slice(4, 6, None)) == [(4, 4), (5, 5)]  # storage only
    assert log.slice(6, 6, None) == []
    # size limits, within storage and across the boundary
    assert ids(log.slice(4, 9, 0)) == [(4, 4)]
    assert ids(log.slice(4, 9, 2 * one)) == [(4, 4), (5, 5)]
    assert ids(log.slice(5, 9, 3 * one)) == [(5, 5), (6, 5), (7, 6)]
    assert ids(log.slice(6, 9, 2 * one)) == [(6, 5), (7, 6)]
    assert ids(log.entries_from(7, None)) == [(7, 6), (8, 6)]
    assert log.entries_from(9, None) == []


def test_slice_bounds() -> None:
    log = log_with([(4, 4), (5, 5)], [(6, 6)], snapshot=(3, 3))
    with pytest.raises(CompactedError):
        log.slice(3, 5, None)
    with pytest.raises(RaftError):
        log.slice(4, 8, None)
    with pytest.raises(RaftError):
        log.slice(5, 4, None)


@given(
    n_stable=st.integers(0, 6),
    n_unstable=st.integers(0, 6),
    bounds=st.tuples(st.integers(0, 12), st.integers(0, 12)),
    max_entries=st.one_of(st.none(), st.integers(0, 8)),
)
def test_slice_matches_a_plain_list(
    n_stable: int, n_unstable: int, bounds: tuple[int, int], max_entries: int | None
) -> None:
    """Wherever the storage/unstable boundary is, slice is a prefix-limited list slice."""
    terms = [1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6]
    all_ents = [(i, terms[i - 1]) for i in range(1, n_stable + n_unstable + 1)]
    log = log_with(all_ents[:n_stable], all_ents[n_stable:])
    lo, hi = sorted(bounds)
    lo = max(lo, 1)
    hi = min(max(hi, lo), log.last_index() + 1)
    if lo > hi:
        return
    one = Entry(0, 0).size()
    max_size = None if max_entries is None else max_entries * one
    want = all_ents[lo - 1 : hi - 1]
    if max_entries is not None and want:
        want = want[: max(1, max_entries)]
    assert ids(log.slice(lo, hi, max_size)) == want


@given(
    st.lists(
        st.tuples(st.integers(1, 8), st.lists(st.integers(1, 4), max_size=4)),
        max_size=8,
    )
)
def test_maybe_append_against_a_model(appends: list[tuple[int, list[int]]]) -> None:
    """Random leader appends keep the log equal to a simple model of Raft's append rule."""
    log = log_with([])
    model: list[int] = []  # model[i - 1] is the term at index i
    for prev, new_terms in appends:
        prev = min(prev - 1, len(model))
        prev_term = model[prev - 1] if prev > 0 else 0
        # Terms along a leader's log never decrease.
        terms = sorted(max(t, prev_term, 1) for t in new_terms)
        incoming = ents(*[(prev + 1 + k, t) for k, t in enumerate(terms)])
        got = log.maybe_append(prev, prev_term, 0, incoming)
        assert got == prev + len(incoming)
        for k, t in enumerate(terms):
            i = prev + k  # position in model
            if i < len(model) and model[i] != t:
                del model[i:]
            if i == len(model):
                model.append(t)
        assert [log.term(i) for i in range(1, log.last_index() + 1)] == model


# -- commit and apply ------------------------------------------------------------------------
def test_commit_bounds() -> None:
    log = log_with([(1, 1), (2, 1), (3, 2)])
    log.commit_to(2)
    log.commit_to(1)  # never goes back
    assert log.committed == 2
    with pytest.raises(RaftError, match="out of range"):
        log.commit_to(4)


def test_maybe_commit_only_for_the_given_term() -> None:
    log = log_with([(1, 1), (2, 1), (3, 2)])
    assert not log.maybe_commit(2, 2)  # entry 2 is of term 1
    assert log.committed == 0
    assert log.maybe_commit(3, 2)
    assert log.committed == 3
    assert not log.maybe_commit(3, 2)  # no progress


def test_applied_bounds_and_next_committed_entries() -> None:
    log = log_with([(1, 1), (2, 1)], [(3, 2)])
    assert log.next_committed_entries() == []
    log.commit_to(3)
    assert ids(log.next_committed_entries()) == [(1, 1), (2, 1), (3, 2)]
    log.applied_to(2)
    assert ids(log.next_committed_entries()) == [(3, 2)]
    assert log.has_next_committed_entries()
    with pytest.raises(RaftError):
        log.applied_to(1)  # backwards
    with pytest.raises(RaftError):
        log.applied_to(4)  # beyond commit
    log.applied_to(0)  # a no-op
    log.applied_to(3)
    assert not log.has_next_committed_entries()


def test_next_committed_entries_respects_the_size_limit() -> None:
    one = Entry(0, 0).size()
    storage = MemoryStorage()
    storage.append(ents((1, 1), (2, 1), (3, 1)))
    log = RaftLog(storage, max_applying_size=2 * one)
    log.commit_to(3)
    assert ids(log.next_committed_entries()) == [(1, 1), (2, 1)]


def test_stable_to_moves_entries_out_of_unstable() -> None:
    log = log_with([(1, 1)], [(2, 1), (3, 1)])
    log.stable_to(2, 1)
    assert ids(log.unstable_entries()) == [(3, 1)]
    log.stable_to(3, 2)  # wrong term: ignored
    assert ids(log.unstable_entries()) == [(3, 1)]
