"""Key and value encoding shared by every call: bytes on the wire, ``str`` accepted as UTF-8."""

from __future__ import annotations

KeyLike = str | bytes
"""A key, value or range end as the caller may pass it: ``bytes``, or ``str`` (UTF-8)."""

FROM_KEY = b"\0"
"""The range end that means "every key from ``key`` upwards" (etcd's ``--from-key``)."""


def to_bytes(value: KeyLike) -> bytes:
    """``value`` as bytes: ``str`` is encoded as UTF-8, ``bytes`` (and bytearray) pass through."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def prefix_end(prefix: KeyLike) -> bytes:
    """The range end covering every key that starts with ``prefix`` (etcd's GetPrefixRangeEnd).

    The last byte below 0xff is incremented and the rest dropped; a prefix of
    only 0xff bytes (or the empty prefix) gives ``b"\\0"``: every key.
    """
    end = bytearray(to_bytes(prefix))
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return FROM_KEY
