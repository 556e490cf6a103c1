"""The simulator's replicated application: a tiny key-value map written by ``key=value`` entries.

Each normal entry's data is ``key=value`` (a put); empty entries are the
leaders' no-ops. Values are unique across a simulation (the client's sequence
number), so the history of a key identifies every write. The state is
deterministic: the same entries in the same order give the same map, and a
snapshot (:func:`encode`) restores it exactly (:func:`decode`).
"""

from __future__ import annotations


def parse_put(data: bytes) -> tuple[bytes, bytes] | None:
    """The (key, value) of a put entry's data, or None for an empty (no-op) entry."""
    if not data:
        return None
    key, sep, value = data.partition(b"=")
    if not sep:
        raise ValueError(f"malformed put entry {data!r}")
    return key, value


def encode(state: dict[bytes, bytes]) -> bytes:
    """The snapshot bytes of ``state`` (sorted, so equal maps give equal bytes)."""
    return b"\n".join(k + b"=" + v for k, v in sorted(state.items()))


def decode(data: bytes) -> dict[bytes, bytes]:
    """The map a snapshot written by :func:`encode` holds."""
    state: dict[bytes, bytes] = {}
    if not data:
        return state
    for line in data.split(b"\n"):
        key, _, value = line.partition(b"=")
        state[key] = value
    return state
