"""The state machine port a member applies committed entries to, and a tiny default machine.

The member calls the port only from its event loop, in log order:

* ``apply(index, term, data)`` for every NORMAL entry, with the proposer's
  payload (the member strips its request envelope). ``data == b""`` is a
  no-op (a new leader's empty entry, or an empty proposal) that only
  advances ``applied_index``; conf change entries are handled by the member
  and reach the port as such no-ops too, so the port sees every index;
* ``snapshot()`` for the state at ``applied_index`` (the member stores it);
* ``restore(data, index)`` to replace the state with a snapshot taken at
  ``index``.

Invariant every implementation keeps: the same sequence of ``apply`` calls
gives the same state and the same ``snapshot()`` bytes on every member.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Protocol


class StateMachine(Protocol):
    """The replicated application state (the next milestone plugs the MVCC store in here)."""

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (or restored from a snapshot)."""
        ...

    def apply(self, index: int, term: int, data: bytes) -> object:
        """Apply one committed entry's payload; the result is handed to the proposer."""
        ...

    def snapshot(self) -> bytes:
        """The state at ``applied_index``, as bytes ``restore`` accepts."""
        ...

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole state with a snapshot taken at ``index``."""
        ...


_DIGEST_SNAPSHOT = struct.Struct("<QQ32s")  # applied index, payload count, digest


class DigestStateMachine:
    """The default machine: counts applied payloads and chains a SHA-256 over them.

    ``digest`` is ``sha256(previous digest | index | payload)`` over every
    non-empty payload, so two members with the same ``digest`` at the same
    ``applied_index`` applied exactly the same payloads at the same indexes.
    ``apply`` returns ``(index, count)`` for a payload.
    """

    def __init__(self) -> None:
        self._applied_index = 0
        self.count = 0
        self.digest = bytes(32)

    @property
    def applied_index(self) -> int:
        return self._applied_index

    def apply(self, index: int, term: int, data: bytes) -> object:
        if index <= self._applied_index:
            raise ValueError(f"entry {index} applied after {self._applied_index}")
        self._applied_index = index
        if not data:
            return None
        self.count += 1
        self.digest = hashlib.sha256(self.digest + index.to_bytes(8, "little") + data).digest()
        return (index, self.count)

    def snapshot(self) -> bytes:
        return _DIGEST_SNAPSHOT.pack(self._applied_index, self.count, self.digest)

    def restore(self, data: bytes, index: int) -> None:
        snap_index, count, digest = _DIGEST_SNAPSHOT.unpack(data)
        if snap_index != index:
            raise ValueError(f"snapshot data is at index {snap_index}, metadata says {index}")
        self._applied_index = index
        self.count = count
        self.digest = digest
