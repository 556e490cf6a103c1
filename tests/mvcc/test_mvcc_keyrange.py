"""etcd's (key, range_end) convention and the ordered key index."""

from __future__ import annotations

import random

from consensus.mvcc.keyrange import FROM_KEY, contains, interval, prefix_end
from consensus.mvcc.sortedkeys import LOAD, SortedKeys


def test_interval_single_key_from_key_and_span() -> None:
    assert interval(b"a") == (b"a", b"a\x00")
    assert interval(b"a", FROM_KEY) == (b"a", None)
    assert interval(b"a", b"c") == (b"a", b"c")
    assert contains(interval(b"a"), b"a")
    assert not contains(interval(b"a"), b"a\x00")
    assert contains(interval(b"\x00", FROM_KEY), b"\x00")
    assert contains(interval(b"b", FROM_KEY), b"\xff\xff")
    assert not contains(interval(b"b", FROM_KEY), b"a")
    assert not contains(interval(b"c", b"a"), b"b")  # inverted: empty


def test_prefix_end_matches_etcd() -> None:
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"aa") == b"ab"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == FROM_KEY
    assert prefix_end(b"") == FROM_KEY


def test_sorted_keys_against_a_set_model() -> None:
    rnd = random.Random(7)
    index = SortedKeys()
    model: set[bytes] = set()
    universe = [rnd.randbytes(rnd.randint(1, 3)) for _ in range(6 * LOAD)]
    for step in range(12 * LOAD):
        key = rnd.choice(universe)
        if rnd.random() < 0.7:
            assert index.add(key) == (key not in model)
            model.add(key)
        else:
            assert index.discard(key) == (key in model)
            model.discard(key)
        if step % 97 == 0:
            ordered = sorted(model)
            assert list(index) == ordered
            assert len(index) == len(model)
            for _ in range(5):
                start = rnd.choice(universe)
                end = rnd.choice([None, rnd.choice(universe)])
                want = [k for k in ordered if k >= start and (end is None or k < end)]
                assert list(index.irange(start, end)) == want
                assert index.count(start, end) == len(want)
    assert all(k in index for k in model)
    assert b"not there" not in index or b"not there" in model


def test_sorted_keys_bulk_build_and_empty_ranges() -> None:
    index = SortedKeys([b"b", b"a", b"c", b"a"])
    assert list(index) == [b"a", b"b", b"c"]
    assert list(index.irange(b"c", b"a")) == []
    assert index.count(b"c", b"a") == 0
    assert list(index.irange(b"d", None)) == []
    assert SortedKeys().count(b"a", None) == 0
    assert list(SortedKeys().irange(b"a", None)) == []
