"""The bytes a member stores as a Raft snapshot's data: the membership table plus the FSM's state.

Layout: ``magic b"FSNP" | version u8 | membership_len u32 | membership | fsm_state``
(little-endian). Both parts are taken at the same applied index, so a member
that installs the snapshot has the same members and the same state as the
one that took it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from consensus.server.membership import Membership

_MAGIC = b"FSNP"
_VERSION = 1
_HEADER = struct.Struct("<4sBI")


@dataclass(slots=True)
class StateSnapshot:
    """A decoded snapshot payload."""

    membership: Membership
    fsm_state: bytes

    def encode(self) -> bytes:
        table = self.membership.encode()
        return _HEADER.pack(_MAGIC, _VERSION, len(table)) + table + self.fsm_state

    @staticmethod
    def decode(data: bytes) -> StateSnapshot:
        if len(data) < _HEADER.size:
            raise ValueError(f"snapshot data too short ({len(data)} bytes)")
        magic, version, table_len = _HEADER.unpack_from(data, 0)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError(f"snapshot data has unknown format {magic!r} v{version}")
        end = _HEADER.size + table_len
        if end > len(data):
            raise ValueError("snapshot data truncated in the membership table")
        return StateSnapshot(Membership.decode(data[_HEADER.size : end]), data[end:])
