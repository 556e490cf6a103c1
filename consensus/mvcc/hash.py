"""HashKV: etcd's checksum of the key space up to a revision, bit for bit.

Members compare it to detect divergence, so it must depend only on the
applied operations. It is computed exactly as etcd's ``HashByRev`` computes
it over its ``key`` bucket, so a Flagstaff member and an etcd member that
applied the same operations report the same hash:

- CRC-32C (Castagnoli), seeded with the bucket name ``b"key"``;
- then, for every retained version in (main, sub) revision order with
  ``main <= revision``, the bucket key (main and sub as big-endian uint64
  around a ``b"_"``, plus ``b"t"`` for a tombstone) followed by the bucket
  value, the protobuf encoding of ``mvccpb.KeyValue`` (a tombstone's value
  holds only the key);
- versions at or below the compaction revision count only if they are in
  etcd's "keep" set at ``revision`` (the newest version of a key live at
  ``revision``), unless that set is empty.
"""

from __future__ import annotations

import struct

import crc32c

from consensus.mvcc.keyspace import Keyspace
from consensus.mvcc.kv import KeyValue

_BUCKET = b"key"
"""etcd's key bucket name, the first bytes hashed."""

_REVISION = struct.Struct(">QcQ")
"""etcd's revision key: main, ``b"_"``, sub (all big-endian)."""

_U64 = (1 << 64) - 1


def _encode_varint(value: int) -> bytes:
    """A protobuf varint; negative int64 values take ten bytes, as in Go."""
    value &= _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_encode_varint(n) for n in range(1 << 14)]
"""Cached encodings of 0 .. 16383 (one or two bytes): most lengths and revisions."""


def _varint(value: int) -> bytes:
    """A protobuf varint, from the cache when small."""
    if 0 <= value < 16384:
        return _SMALL_VARINTS[value]
    return _encode_varint(value)


def marshal_key_value(kv: KeyValue) -> bytes:
    """The protobuf (proto3) encoding of ``mvccpb.KeyValue`` as etcd stores it.

    Fields in number order, zero values omitted; a tombstone is stored with
    its key only.
    """
    key = kv.key
    if kv.is_tombstone:
        return b"\x0a" + _varint(len(key)) + key
    parts = [b"\x0a", _varint(len(key)), key]
    if kv.create_revision:
        parts += (b"\x10", _varint(kv.create_revision))
    if kv.mod_revision:
        parts += (b"\x18", _varint(kv.mod_revision))
    if kv.version:
        parts += (b"\x20", _varint(kv.version))
    if kv.value:
        parts += (b"\x2a", _varint(len(kv.value)), kv.value)
    if kv.lease:
        parts += (b"\x30", _varint(kv.lease))
    return b"".join(parts)


def revision_key(main: int, sub: int, tombstone: bool) -> bytes:
    """etcd's bucket key for a version: ``main`` ``_`` ``sub`` [``t``]."""
    key = _REVISION.pack(main & _U64, b"_", sub & _U64)
    return key + b"t" if tombstone else key


def hash_kv(keyspace: Keyspace, revision: int, compact_revision: int) -> int:
    """The CRC-32C of every retained version up to ``revision`` (see the module doc)."""
    keep_is_empty = next(keyspace.scan((b"", None), revision), None) is None
    value = int(crc32c.crc32c(_BUCKET))
    for main, group in keyspace.records(revision):
        below_compaction = main <= compact_revision
        parts: list[bytes] = []
        for sub, kv in enumerate(group):
            if kv is None:
                continue
            if below_compaction and not keep_is_empty and keyspace.get(kv.key, revision) is not kv:
                continue  # superseded by a newer version by ``revision``: not in the keep set
            parts.append(revision_key(main, sub, kv.is_tombstone))
            parts.append(marshal_key_value(kv))
        if parts:
            value = int(crc32c.crc32c(b"".join(parts), value))
    return value
