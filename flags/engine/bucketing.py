"""Percentage rollouts: the portable bucketing hash and the bucket → variation mapping.

**The hash.** A context's bucket for a flag is computed from the text
``"{flag_key}.{salt}.{value}"`` (or ``"{seed}.{value}"`` when the rollout has a
``seed``), where ``value`` is the rollout's ``bucket_by`` attribute:

1. SHA-1 of the text's UTF-8 bytes (a lone surrogate is encoded as U+FFFD, as
   JavaScript's ``TextEncoder`` does);
2. ``h`` = the first 15 hex digits of the digest (its first 60 bits) as an integer;
3. ``bucket = floor(h * 100000 / 0xFFFFFFFFFFFFFFF)``, in ``0..100000``; the single
   ``h`` giving 100000 counts as 99999. In JavaScript use ``BigInt``: ``h * 100000``
   needs 77 bits.

This is LaunchDarkly's hash and scale (their float ``h / 0xFFFFFFFFFFFFFFF`` compared
with ``cumulative_weight / 100000`` decides the same way, computed exactly).

**The mapping.** A rollout's entries, in list order, cover consecutive bucket ranges:
entry 0 gets buckets ``[0, w0)``, entry 1 ``[w0, w0 + w1)``, and so on (weights sum to
100000). A context's bucket depends only on the flag key, the salt (or seed) and the
bucketing value, never on the weights, so **raising the weight of the first entry only
ever adds contexts to it**: everyone already in ``[0, w0)`` is in any larger
``[0, w0')``. Keep the variation being rolled out first and change weights without
reordering entries; reordering entries, changing the salt, the seed or
``bucket_by`` reshuffles everyone.

**The value.** Strings are used as they are; integers (and integral doubles) within
±(2^53 - 1) as their decimal digits (``42``, never ``42.0``). A context whose
``bucket_by`` attribute is missing or of another type is bucketed by its ``key``
instead, so it still gets a stable, evenly distributed assignment.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from flags.engine.document import WEIGHT_SCALE

HASH_SCALE = 0xFFFFFFFFFFFFFFF
"""The largest 15-hex-digit number: ``h / HASH_SCALE`` is in ``[0, 1]``."""
_MAX_SAFE_INTEGER = 2**53 - 1


def hash_prefix(flag_key: str, salt: str, seed: int | None = None) -> str:
    """The part of the hashed text before the bucketing value (it ends with a dot)."""
    if seed is not None:
        return f"{seed}."
    return f"{flag_key}.{salt}."


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text).encode()


def hash_point(prefix: str, value: str) -> int:
    """``h``: the first 60 bits of SHA-1(prefix + value), an integer in ``[0, HASH_SCALE]``."""
    return int.from_bytes(hashlib.sha1(_utf8(prefix + value)).digest()[:8], "big") >> 4


def bucket(flag_key: str, salt: str, value: str, seed: int | None = None) -> int:
    """The context's bucket, ``0..99999`` (units of 0.001%), for this flag and bucketing value."""
    h = hash_point(hash_prefix(flag_key, salt, seed), value)
    return min(h * WEIGHT_SCALE // HASH_SCALE, WEIGHT_SCALE - 1)


def bucketing_value(value: object) -> str | None:
    """The text a bucketing attribute value contributes, or ``None`` if it cannot be bucketed."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER else None
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER:
        return str(int(value))
    return None


def thresholds(weights: Sequence[int]) -> tuple[int, ...]:
    """Upper bounds on ``h`` for each entry: entry ``i`` is the first with ``h < t[i]``.

    ``bucket < c`` (an integer ``c``) holds exactly when ``h * 100000 < c * HASH_SCALE``,
    that is ``h < ceil(c * HASH_SCALE / 100000)``; the last bound covers every ``h``.
    """
    out: list[int] = []
    cumulative = 0
    for w in weights:
        cumulative += w
        if cumulative >= WEIGHT_SCALE:
            out.append(HASH_SCALE + 1)
        else:
            out.append(-(-cumulative * HASH_SCALE // WEIGHT_SCALE))
    return tuple(out)


def entry_for_bucket(weights: Sequence[int], b: int) -> int:
    """Which rollout entry a bucket falls in (the reference mapping, for tests and docs)."""
    cumulative = 0
    for i, w in enumerate(weights):
        cumulative += w
        if b < cumulative:
            return i
    return len(weights) - 1


_UNPACK_U64 = struct.Struct(">Q").unpack_from


T = TypeVar("T")


def make_selector(prefix: str, weights: Sequence[int],
                  get: Callable[[Mapping[str, object]], object] | None, choices: Sequence[T],
                  ) -> Callable[[Mapping[str, object], str, object], T]:
    """A function ``(context, context_key, _) -> choices[i]`` for the rollout entry ``i`` hit.

    (The ignored third argument lets a flag use the selector directly as its decision
    procedure.) It compares the first 64 bits of the digest with ``thresholds(weights)``
    scaled by 16, which decides exactly as comparing the first 60 bits (``h``) would.
    """
    bounds = tuple(t << 4 for t in thresholds(weights))
    picks = tuple(choices)
    sha1 = hashlib.sha1
    unpack = _UNPACK_U64

    def slow(value: str) -> T:
        return picks[bisect_right(bounds, unpack(sha1(_utf8(prefix + value)).digest())[0])]

    if get is not None:

        def by_attribute(ctx: Mapping[str, object], key: str, _: object = None) -> T:
            chosen = bucketing_value(get(ctx))
            return slow(key if chosen is None else chosen)

        return by_attribute

    if len(bounds) == 2:
        bound, first, second = bounds[0], picks[0], picks[1]

        def by_key_2(ctx: Mapping[str, object], key: str, _: object = None) -> T:
            try:
                h = unpack(sha1((prefix + key).encode()).digest())[0]
            except UnicodeEncodeError:
                return slow(key)
            return first if h < bound else second

        return by_key_2

    def by_key(ctx: Mapping[str, object], key: str, _: object = None) -> T:
        try:
            return picks[bisect_right(bounds, unpack(sha1((prefix + key).encode()).digest())[0])]
        except UnicodeEncodeError:
            return slow(key)

    return by_key
