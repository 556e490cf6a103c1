"""An ordered set of byte-string keys with O(log n) updates and range scans.

The key index behind Range: ``irange(start, end)`` yields the keys of an
interval in order in O(log n + k), and ``count(start, end)`` counts them in
O(log n) (plus an O(n / LOAD) offset rebuild after a change).

It is a list of sorted chunks (after the ``sortedcontainers`` design): an
insert or delete moves at most ``2 * LOAD`` pointers instead of the whole
array, so it stays fast at millions of keys.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import accumulate

LOAD = 512
"""Target chunk length; a chunk is split when it grows past ``2 * LOAD``."""


class SortedKeys:
    """An ordered set of ``bytes`` keys, stored as a list of sorted chunks.

    Invariants: every chunk is non-empty and strictly increasing; the last key
    of chunk ``i`` is ``_maxes[i]`` and is smaller than the first key of chunk
    ``i + 1``; ``_len`` is the total number of keys; ``_offsets`` is None or
    holds, for each chunk, the number of keys in the chunks before it.
    """

    __slots__ = ("_chunks", "_len", "_maxes", "_offsets")

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        ordered = sorted(set(keys))
        self._chunks: list[list[bytes]] = [
            ordered[i : i + LOAD] for i in range(0, len(ordered), LOAD)
        ]
        self._maxes: list[bytes] = [chunk[-1] for chunk in self._chunks]
        self._len = len(ordered)
        self._offsets: list[int] | None = None

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return False
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        return chunk[j] == key

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield from chunk

    def add(self, key: bytes) -> bool:
        """Insert ``key``; returns False when it was already present."""
        maxes = self._maxes
        if not maxes:
            self._chunks.append([key])
            maxes.append(key)
            self._len = 1
            self._offsets = None
            return True
        i = bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1  # beyond every key: append to the last chunk
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        if j < len(chunk) and chunk[j] == key:
            return False
        chunk.insert(j, key)
        maxes[i] = chunk[-1]
        if len(chunk) > 2 * LOAD:
            tail = chunk[LOAD:]
            del chunk[LOAD:]
            self._chunks.insert(i + 1, tail)
            maxes[i] = chunk[-1]
            maxes.insert(i + 1, tail[-1])
        self._len += 1
        self._offsets = None
        return True

    def discard(self, key: bytes) -> bool:
        """Remove ``key``; returns False when it was not present."""
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return False
        chunk = self._chunks[i]
        j = bisect_left(chunk, key)
        if chunk[j] != key:
            return False
        del chunk[j]
        if chunk:
            self._maxes[i] = chunk[-1]
        else:
            del self._chunks[i]
            del self._maxes[i]
        self._len -= 1
        self._offsets = None
        return True

    def _position(self, key: bytes) -> int:
        """The number of keys smaller than ``key``."""
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return self._len
        if self._offsets is None:
            self._offsets = [0, *accumulate(len(chunk) for chunk in self._chunks)]
        return self._offsets[i] + bisect_left(self._chunks[i], key)

    def count(self, start: bytes, end: bytes | None) -> int:
        """How many keys lie in ``[start, end)`` (``end is None``: unbounded)."""
        high = self._len if end is None else self._position(end)
        return max(0, high - self._position(start))

    def irange(self, start: bytes, end: bytes | None) -> Iterator[bytes]:
        """The keys in ``[start, end)`` in ascending order.

        The set must not be changed while the iterator is in use.
        """
        chunks = self._chunks
        i = bisect_left(self._maxes, start)
        if i == len(chunks):
            return
        j = bisect_left(chunks[i], start)
        while i < len(chunks):
            chunk = chunks[i]
            if end is not None and chunk[-1] >= end:
                yield from chunk[j : bisect_left(chunk, end, j)]
                return
            yield from chunk[j:] if j else chunk
            i += 1
            j = 0


__all__ = ["LOAD", "SortedKeys"]
