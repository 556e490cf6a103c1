"""The payload of a replicated etcd request: an operation tag, who asked, and the request bytes.

This is Flagstaff's counterpart of etcd's ``InternalRaftRequest``. The gRPC
layer serializes the client's own protobuf request (already parsed and
validated) behind a small fixed header, so apply can decode exactly that
message type. Layout (little endian)::

    u8 op | u64 time_ms | u16 len(principal) | principal | u16 len(actor) | actor
          | u16 len(reason) | reason [| u16 len(source) | source] | request bytes

``time_ms`` is the proposing member's wall clock (apply reads it only as
data -- the audit record's time -- so apply stays deterministic).
``principal`` is the authenticated core user ('' when auth is off);
``actor``, ``reason`` and ``source`` are the on-behalf-of metadata a trusted
platform passes for the audit trail (``flagstaff-actor``, ``flagstaff-reason``,
``flagstaff-source``). The source field is present only when the op byte has
its high bit (:data:`HAS_SOURCE`) set, so entries written before it existed
still decode.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

_HEAD = struct.Struct("<BQ")
_LEN = struct.Struct("<H")
HAS_SOURCE = 0x80
"""Set in the op byte when a ``source`` string follows the reason."""


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
    AUDIT_APPEND = 11
    """A platform event for the audit trail (``flagstaff.audit.v1.AppendRequest``); no key change."""
    AUDIT_PURGE = 12
    """Drop audit records older than a cutoff the leader chose (``flagstaff.audit.v1.PurgeRequest``)."""


@dataclass(frozen=True, slots=True)
class InternalRequest:
    """One replicated request, decoded."""

    op: Op
    body: bytes
    time_ms: int = 0
    principal: str = ""
    actor: str = ""
    reason: str = ""
    source: str = ""

    def encode(self) -> bytes:
        texts = [self.principal, self.actor, self.reason]
        flag = 0
        if self.source:
            texts.append(self.source)
            flag = HAS_SOURCE
        parts = [_HEAD.pack(int(self.op) | flag, self.time_ms)]
        for text in texts:
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
        for _ in range(4 if op & HAS_SOURCE else 3):
            (n,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            texts.append(data[pos : pos + n].decode())
            pos += n
        source = texts[3] if len(texts) > 3 else ""
        return InternalRequest(
            Op(op & ~HAS_SOURCE), data[pos:], time_ms, texts[0], texts[1], texts[2], source
        )
