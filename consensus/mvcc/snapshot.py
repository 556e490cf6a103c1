"""The snapshot encoding of a store: every byte of replicated state, deterministically.

The layout is columnar, so that encoding and decoding run mostly in C
(``array`` and ``bytes`` operations) rather than one Python step per field.
All integers are little-endian::

    header        "FSKV", u16 format, i64 revision, i64 compact_revision,
                  u32 key count K, u64 version count V, u32 lease count L
    keys          u32[K] lengths, then the K keys concatenated (ascending, distinct)
    versions      u32[V] key index, i64[V] main revision, u32[V] sub revision,
                  i64[V] create revision, i64[V] version, i64[V] lease,
                  u32[V] value length, then the V values concatenated;
                  in (main, sub) revision order
    leases        i64[L] id, i64[L] ttl, i64[L] remaining ttl,
                  u8[L] has expiry, f64[L] expiry; by ascending id
    trailer       u32 CRC-32C of everything before it

Each key is written once and versions refer to it by index; sub revisions
are explicit because compaction leaves gaps. Lease attachments are not
written: they follow from the keys' newest versions. The same state always
encodes to the same bytes, so two members' snapshots compare byte for byte.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate, pairwise

import crc32c

from consensus.mvcc.errors import SnapshotError
from consensus.mvcc.keyspace import Keyspace
from consensus.mvcc.kv import KeyValue
from consensus.mvcc.lease import Lease

MAGIC = b"FSKV"
FORMAT = 1
"""The layout version written; decoding refuses any other."""

_HEADER = struct.Struct("<4sHqqIQI")
_TRAILER = struct.Struct("<I")
_BIG_ENDIAN = sys.byteorder == "big"

# The array typecodes for the fixed widths the layout uses (asserted at import).
_U8, _U32, _I64, _F64 = "B", "I", "q", "d"
assert array(_U32).itemsize == 4 and array(_I64).itemsize == 8 and array(_F64).itemsize == 8


@dataclass(slots=True)
class SnapshotState:
    """The decoded contents of a snapshot, ready for a store to adopt.

    ``versions`` are ``(sub, KeyValue)`` pairs in revision order.
    """

    revision: int
    compact_revision: int
    versions: list[tuple[int, KeyValue]]
    leases: list[Lease]


def _ints(typecode: str, values: Iterable[int]) -> bytes:
    """A little-endian integer array of ``values``."""
    column = array(typecode, values)
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tobytes()


def _floats(values: Iterable[float]) -> bytes:
    """A little-endian float64 array of ``values``."""
    column = array(_F64, values)
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tobytes()


def encode(revision: int, compact_revision: int, keyspace: Keyspace, leases: list[Lease]) -> bytes:
    """Serialize the replicated state (see the module doc for the layout)."""
    subs: list[int] = []
    kvs: list[KeyValue] = []
    for _, group in keyspace.records():
        for sub, kv in enumerate(group):
            if kv is not None:
                subs.append(sub)
                kvs.append(kv)
    keys = sorted({kv.key for kv in kvs})
    index = {key: i for i, key in enumerate(keys)}
    ordered = sorted(leases, key=lambda lease: lease.id)

    parts = [
        _HEADER.pack(MAGIC, FORMAT, revision, compact_revision, len(keys), len(kvs), len(ordered)),
        _ints(_U32, map(len, keys)),
        b"".join(keys),
        _ints(_U32, [index[kv.key] for kv in kvs]),
        _ints(_I64, [kv.mod_revision for kv in kvs]),
        _ints(_U32, subs),
        _ints(_I64, [kv.create_revision for kv in kvs]),
        _ints(_I64, [kv.version for kv in kvs]),
        _ints(_I64, [kv.lease for kv in kvs]),
        _ints(_U32, [len(kv.value) for kv in kvs]),
        b"".join([kv.value for kv in kvs]),
        _ints(_I64, [lease.id for lease in ordered]),
        _ints(_I64, [lease.ttl for lease in ordered]),
        _ints(_I64, [lease.remaining_ttl for lease in ordered]),
        _ints(_U8, [int(lease.expiry is not None) for lease in ordered]),
        _floats([lease.expiry or 0.0 for lease in ordered]),
    ]
    body = b"".join(parts)
    return body + _TRAILER.pack(int(crc32c.crc32c(body)))


class _Reader:
    """A cursor over a snapshot body; running past the end raises ``SnapshotError``."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._offset = offset

    @property
    def at_end(self) -> bool:
        return self._offset == len(self._data)

    def take(self, length: int) -> bytes:
        """The next ``length`` bytes."""
        end = self._offset + length
        if end > len(self._data):
            raise SnapshotError("mvcc: invalid snapshot: truncated")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def ints(self, typecode: str, count: int) -> array[int]:
        """The next little-endian integer array of ``count`` items."""
        column = array(typecode)
        column.frombytes(self.take(column.itemsize * count))
        if _BIG_ENDIAN:
            column.byteswap()
        return column

    def floats(self, count: int) -> array[float]:
        """The next little-endian float64 array of ``count`` items."""
        column: array[float] = array("d")
        column.frombytes(self.take(column.itemsize * count))
        if _BIG_ENDIAN:
            column.byteswap()
        return column

    def blobs(self, lengths: array[int]) -> list[bytes]:
        """The next byte strings, concatenated, with the given lengths."""
        blob = self.take(sum(lengths))
        ends = list(accumulate(lengths))
        starts = [0, *ends[:-1]] if ends else []
        return [blob[start:end] for start, end in zip(starts, ends, strict=True)]


def decode(data: bytes) -> SnapshotState:
    """Parse and check snapshot bytes; raises ``SnapshotError`` on anything malformed."""
    data = bytes(data)
    if len(data) < _HEADER.size + _TRAILER.size:
        raise SnapshotError("mvcc: invalid snapshot: too short")
    body = data[: -_TRAILER.size]
    (checksum,) = _TRAILER.unpack_from(data, len(body))
    if int(crc32c.crc32c(body)) != checksum:
        raise SnapshotError("mvcc: invalid snapshot: checksum mismatch")
    magic, fmt, revision, compact_revision, key_count, version_count, lease_count = (
        _HEADER.unpack_from(body, 0)
    )
    if magic != MAGIC:
        raise SnapshotError("mvcc: invalid snapshot: bad magic")
    if fmt != FORMAT:
        raise SnapshotError(f"mvcc: invalid snapshot: unknown format {fmt}")
    reader = _Reader(body, _HEADER.size)

    keys = reader.blobs(reader.ints(_U32, key_count))
    if not all(keys) or any(a >= b for a, b in pairwise(keys)):
        raise SnapshotError("mvcc: invalid snapshot: bad key table")

    key_index = reader.ints(_U32, version_count)
    mains = reader.ints(_I64, version_count)
    subs = reader.ints(_U32, version_count)
    creates = reader.ints(_I64, version_count)
    numbers = reader.ints(_I64, version_count)
    lease_ids = reader.ints(_I64, version_count)
    values = reader.blobs(reader.ints(_U32, version_count))
    if version_count and (max(key_index) >= key_count or max(mains) > revision):
        raise SnapshotError("mvcc: invalid snapshot: bad version record")
    kvs = list(
        map(KeyValue, map(keys.__getitem__, key_index), creates, mains, numbers, values, lease_ids)
    )

    ids = reader.ints(_I64, lease_count)
    ttls = reader.ints(_I64, lease_count)
    remaining = reader.ints(_I64, lease_count)
    has_expiry = reader.ints(_U8, lease_count)
    expiries = reader.floats(lease_count)
    leases = [
        Lease(lease_id, ttl, left, expiry if has else None)
        for lease_id, ttl, left, has, expiry in zip(
            ids, ttls, remaining, has_expiry, expiries, strict=True
        )
    ]
    if not reader.at_end:
        raise SnapshotError("mvcc: invalid snapshot: trailing bytes")
    return SnapshotState(revision, compact_revision, list(zip(subs, kvs, strict=True)), leases)
