"""etcd's key-range convention: how ``(key, range_end)`` names a set of keys.

- ``range_end == b""``: the single key ``key``;
- ``range_end == b"\\x00"``: every key ``>= key`` (so ``key == b"\\x00"`` too
  means every key, since the empty key is never stored);
- otherwise the half-open interval ``[key, range_end)``, empty when
  ``range_end <= key``.

Internally an interval is ``(start, end)`` with ``end is None`` meaning
"unbounded above"; a single key ``k`` is ``(k, k + b"\\x00")``, since
``k + b"\\x00"`` is the smallest byte string greater than ``k``.
"""

from __future__ import annotations

FROM_KEY = b"\x00"
"""The ``range_end`` that means "every key from ``key`` on"."""

Interval = tuple[bytes, bytes | None]
"""A half-open key interval ``[start, end)``; ``end is None`` is unbounded."""


def interval(key: bytes, range_end: bytes = b"") -> Interval:
    """The interval etcd's ``(key, range_end)`` pair denotes."""
    if not range_end:
        return key, key + b"\x00"
    if range_end == FROM_KEY:
        return key, None
    return key, range_end


def contains(span: Interval, key: bytes) -> bool:
    """Whether ``key`` lies in the half-open interval ``span``."""
    start, end = span
    return start <= key and (end is None or key < end)


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix``.

    As etcd's ``GetPrefixRangeEnd``: the prefix with its last byte below 0xff
    incremented and what follows dropped; ``b"\\x00"`` (every key) when the
    prefix is empty or all 0xff bytes.
    """
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return FROM_KEY
