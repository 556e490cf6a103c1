"""The payload of a replicated etcd request: an operation tag, who asked, and the request bytes.

This is Flagstaff's counterpart of etcd's ``InternalRaftRequest``. The gRPC
layer serializes the client's own protobuf request (already parsed and
validated) behind a small fixed header, so apply can decode exactly that
message type. Layout (little endian)::

    u8 op | u64 time_ms | u16 len(principal) | principal | u16 len(actor) | actor
          | u16 len(reason) | reason | request bytes

``time_ms`` is the proposing member's wall clock (only lease bookkeeping
reads it, and only as data, so apply stays deterministic). ``principal`` is
the authenticated core user ('' when auth is off); ``actor`` and ``reason``
are the on-behalf-of metadata a trusted platform passes for the audit trail.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

_HEAD = struct.Struct("<BQ")
_LEN = struct.Struct("<H")


class Op(enum.IntEnum):
    """Which request the bytes hold (and so how apply decodes them)."""

    PUT = 1
    DELETE_RANGE = 2
    TXN = 3
    COMPACTION = 4
    LEASE_GRANT = 5
    LEASE_REVOKE = 6
    LEASE_CHECKPOINT = 7
    LEASE_PROMOTE = 8
    ALARM = 9
    AUTH = 10
    """An ``etcdserverpb`` Auth* request; the byte after the header says which."""


@dataclass(frozen=True, slots=True)
class InternalRequest:
    """One replicated request, decoded."""

    op: Op
    body: bytes
    time_ms: int = 0
    principal: str = ""
    actor: str = ""
    reason: str = ""

    def encode(self) -> bytes:
        parts = [_HEAD.pack(int(self.op), self.time_ms)]
        for text in (self.principal, self.actor, self.reason):
            raw = text.encode()
            if len(raw) > 0xFFFF:
                raise ValueError("request metadata too long")
            parts.append(_LEN.pack(len(raw)))
            parts.append(raw)
        parts.append(self.body)
        return b"".join(parts)

    @staticmethod
    def decode(data: bytes) -> InternalRequest:
        op, time_ms = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        texts: list[str] = []
        for _ in range(3):
            (n,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            texts.append(data[pos : pos + n].decode())
            pos += n
        return InternalRequest(Op(op), data[pos:], time_ms, texts[0], texts[1], texts[2])
