"""Unit tests of MemoryStorage: reads and their errors, append with truncation, compaction, snapshots."""

from __future__ import annotations

import pytest

from consensus.raft.storage import MemoryStorage, limit_size
from consensus.raft.types import (
    CompactedError,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDateError,
    UnavailableError,
)


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    """Entries from (index, term) pairs."""
    return [Entry(term=t, index=i) for i, t in pairs]


def ids(entries: list[Entry]) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in entries]


def storage_3_4_5() -> MemoryStorage:
    """A storage compacted through 3 (term 3) holding entries 4 and 5 (terms 4 and 5)."""
    st = MemoryStorage()
    st.apply_snapshot(Snapshot(metadata=SnapshotMetadata(index=3, term=3)))
    st.append(ents((4, 4), (5, 5)))
    return st


def test_empty_storage() -> None:
    st = MemoryStorage()
    assert (st.first_index(), st.last_index()) == (1, 0)
    assert st.term(0) == 0
    assert st.entries(1, 1, None) == []
    assert st.snapshot().is_empty()
    with pytest.raises(UnavailableError):
        st.term(1)


def test_term_bounds() -> None:
    st = storage_3_4_5()
    assert [st.term(i) for i in (3, 4, 5)] == [3, 4, 5]
    with pytest.raises(CompactedError):
        st.term(2)
    with pytest.raises(UnavailableError):
        st.term(6)


@pytest.mark.parametrize(
    ("lo", "hi", "max_size", "want"),
    [
        (4, 5, None, [(4, 4)]),
        (4, 6, None, [(4, 4), (5, 5)]),
        (4, 6, 0, [(4, 4)]),  # never empty, even with no room
        (4, 6, Entry(0, 0).size(), [(4, 4)]),
        (4, 6, 2 * Entry(0, 0).size(), [(4, 4), (5, 5)]),
        (5, 5, None, []),
    ],
)
def test_entries(lo: int, hi: int, max_size: int | None, want: list[tuple[int, int]]) -> None:
    assert ids(storage_3_4_5().entries(lo, hi, max_size)) == want


def test_entries_errors() -> None:
    st = storage_3_4_5()
    with pytest.raises(CompactedError):
        st.entries(3, 5, None)
    with pytest.raises(UnavailableError):
        st.entries(4, 7, None)


@pytest.mark.parametrize(
    ("append", "want"),
    [
        # already compacted: ignored
        ([(2, 3), (3, 3)], [(3, 3), (4, 4), (5, 5)]),
        # same entries again: unchanged
        ([(4, 4), (5, 5)], [(3, 3), (4, 4), (5, 5)]),
        # conflict at 5: truncated and replaced
        ([(4, 4), (5, 6), (6, 6)], [(3, 3), (4, 4), (5, 6), (6, 6)]),
        # extends at the end
        ([(6, 5)], [(3, 3), (4, 4), (5, 5), (6, 5)]),
        # starts below the first index: the compacted prefix is dropped
        ([(3, 3), (4, 6), (5, 6)], [(3, 3), (4, 6), (5, 6)]),
        # conflict at the first entry: everything after the snapshot replaced
        ([(4, 7)], [(3, 3), (4, 7)]),
    ],
)
def test_append(append: list[tuple[int, int]], want: list[tuple[int, int]]) -> None:
    st = storage_3_4_5()
    st.append(ents(*append))
    assert ids(st.entries(st.first_index(), st.last_index() + 1, None)) == [
        w for w in want if w[0] > 3
    ]
    assert st.term(st.first_index() - 1) == want[0][1]
    assert st.last_index() == want[-1][0]


def test_append_gap_is_refused() -> None:
    st = storage_3_4_5()
    with pytest.raises(ValueError, match="missing log entries"):
        st.append(ents((7, 5)))


@pytest.mark.parametrize(
    ("index", "err", "first", "term_of_first_minus_one"),
    [
        (2, CompactedError, 4, 3),
        (3, CompactedError, 4, 3),
        (4, None, 5, 4),
        (5, None, 6, 5),
    ],
)
def test_compact(
    index: int, err: type[Exception] | None, first: int, term_of_first_minus_one: int
) -> None:
    st = storage_3_4_5()
    if err is not None:
        with pytest.raises(err):
            st.compact(index)
    else:
        st.compact(index)
    assert st.first_index() == first
    assert st.last_index() == 5
    assert st.term(first - 1) == term_of_first_minus_one


def test_compact_beyond_last_index() -> None:
    with pytest.raises(UnavailableError):
        storage_3_4_5().compact(6)


def test_create_snapshot() -> None:
    st = storage_3_4_5()
    cs = ConfState([1, 2, 3], [4])
    snap = st.create_snapshot(4, cs, b"data")
    assert (snap.metadata.index, snap.metadata.term, snap.data) == (4, 4, b"data")
    assert snap.metadata.conf_state == cs
    assert snap.metadata.conf_state is not cs  # copied
    assert st.snapshot() is snap
    # The log is not compacted by it.
    assert st.first_index() == 4
    # Without a conf state the previous one is kept.
    assert st.create_snapshot(5, None, b"").metadata.conf_state == cs


def test_create_snapshot_errors() -> None:
    st = storage_3_4_5()
    with pytest.raises(SnapshotOutOfDateError):
        st.create_snapshot(3, None, b"")
    with pytest.raises(UnavailableError):
        st.create_snapshot(6, None, b"")


def test_create_snapshot_of_a_compacted_index_is_refused() -> None:
    # Regression: compacting first and snapshotting an older index used a
    # negative list index and recorded another entry's term.
    st = MemoryStorage()
    st.append(ents((1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3)))
    st.compact(5)
    with pytest.raises(CompactedError):
        st.create_snapshot(3, ConfState([1]), b"")
    # The compaction point itself is still known.
    assert st.create_snapshot(5, ConfState([1]), b"").metadata.term == 3


def test_apply_snapshot() -> None:
    st = storage_3_4_5()
    snap = Snapshot(b"s", SnapshotMetadata(index=10, term=7, conf_state=ConfState([1])))
    st.apply_snapshot(snap)
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 7)
    assert st.initial_state()[1] == ConfState([1])
    with pytest.raises(SnapshotOutOfDateError):
        st.apply_snapshot(Snapshot(metadata=SnapshotMetadata(index=10, term=7)))
    # Entries continue after the snapshot.
    st.append(ents((11, 7)))
    assert st.last_index() == 11


def test_initial_state_is_a_copy() -> None:
    st = MemoryStorage()
    st.set_hard_state(HardState(term=2, vote=1, commit=0))
    hs, cs = st.initial_state()
    hs.term = 99
    cs.voters.append(9)
    assert st.initial_state() == (HardState(2, 1, 0), ConfState())


def test_limit_size() -> None:
    es = ents((1, 1), (2, 1), (3, 1))
    one = es[0].size()
    assert limit_size(es, None) == es
    assert ids(limit_size(es, 0)) == [(1, 1)]
    assert ids(limit_size(es, 2 * one)) == [(1, 1), (2, 1)]
    assert ids(limit_size(es, 2 * one + 1)) == [(1, 1), (2, 1)]
    assert limit_size([], 0) == []
