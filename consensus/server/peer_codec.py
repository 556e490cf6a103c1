"""The binary encoding of Raft messages between members (``struct``-packed, little-endian).

One encoded message is self-contained (its length is known from its own
fields), so the transport frames it only to read it in one piece. Layout::

    header   type u8 | flags u8 | to u64 | from u64 | term u64 | log_term u64
             | index u64 | commit u64 | reject_hint u64 | n_entries u32 | context_len u32
    context  context_len bytes
    entries  n_entries x (term u64 | index u64 | type u8 | data_len u32 | data)
    snapshot (only when flags has FLAG_SNAPSHOT)
             index u64 | term u64 | n_voters u32 | n_learners u32
             | voters n_voters x u64 | learners n_learners x u64 | data_len u64 | data

A snapshot's data may be left out of the encoding (``with_snapshot_data=False``):
the transport streams it separately in chunks and the receiver puts it back
with :func:`attach_snapshot_data`; ``data_len`` still names its full size.

Decoding never trusts a length field: a truncated or inconsistent buffer
raises :class:`PeerCodecError`.
"""

from __future__ import annotations

import struct

from consensus.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

FLAG_REJECT = 0x01
"""``Message.reject`` is set."""
FLAG_SNAPSHOT = 0x02
"""A snapshot section follows the entries."""
FLAG_SNAPSHOT_DATA_DETACHED = 0x04
"""The snapshot's data bytes are not in this encoding (streamed separately)."""

_HEADER = struct.Struct("<BBQQQQQQQII")
_ENTRY_HEADER = struct.Struct("<QQBI")
_SNAPSHOT_HEADER = struct.Struct("<QQII")
_SNAPSHOT_DATA_LEN = struct.Struct("<Q")

HEADER_SIZE = _HEADER.size
"""Bytes taken by the fixed header of every message."""


class PeerCodecError(ValueError):
    """A buffer is not a valid encoded message (truncated, trailing bytes, or unknown enum)."""


def encode_message(m: Message, *, with_snapshot_data: bool = True) -> bytes:
    """Encode ``m``; with ``with_snapshot_data=False`` its snapshot data is left out."""
    flags = FLAG_REJECT if m.reject else 0
    snap = m.snapshot
    if snap is not None:
        flags |= FLAG_SNAPSHOT
        if not with_snapshot_data:
            flags |= FLAG_SNAPSHOT_DATA_DETACHED
    parts: list[bytes] = [
        _HEADER.pack(
            int(m.type),
            flags,
            m.to,
            m.from_,
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.reject_hint,
            len(m.entries),
            len(m.context),
        ),
        m.context,
    ]
    pack_entry = _ENTRY_HEADER.pack
    for e in m.entries:
        parts.append(pack_entry(e.term, e.index, int(e.type), len(e.data)))
        parts.append(e.data)
    if snap is not None:
        meta = snap.metadata
        voters = meta.conf_state.voters
        learners = meta.conf_state.learners
        parts.append(_SNAPSHOT_HEADER.pack(meta.index, meta.term, len(voters), len(learners)))
        if voters or learners:
            parts.append(struct.pack(f"<{len(voters) + len(learners)}Q", *voters, *learners))
        parts.append(_SNAPSHOT_DATA_LEN.pack(len(snap.data)))
        if with_snapshot_data:
            parts.append(snap.data)
    return b"".join(parts)


def decode_message(buf: bytes | bytearray | memoryview) -> Message:
    """Decode one message that fills ``buf`` exactly.

    A message whose snapshot data was detached comes back with empty
    ``snapshot.data``; :func:`decode_message_with_detached_size` also tells how
    much data to expect.
    """
    m, _ = _decode(memoryview(buf))
    return m


def decode_message_with_detached_size(buf: bytes | bytearray | memoryview) -> tuple[Message, int | None]:
    """Decode one message, also returning the size of its detached snapshot data (or None)."""
    return _decode(memoryview(buf))


def attach_snapshot_data(m: Message, data: bytes) -> None:
    """Put back the snapshot data streamed separately from ``m``'s encoding."""
    if m.snapshot is None:
        raise PeerCodecError(f"{m.type.name} carries no snapshot to attach data to")
    m.snapshot.data = data


def _decode(view: memoryview) -> tuple[Message, int | None]:
    total = len(view)
    if total < _HEADER.size:
        raise PeerCodecError(f"message truncated: {total} bytes, header needs {_HEADER.size}")
    (
        mtype,
        flags,
        to,
        from_,
        term,
        log_term,
        index,
        commit,
        reject_hint,
        n_entries,
        context_len,
    ) = _HEADER.unpack_from(view, 0)
    try:
        message_type = MessageType(mtype)
    except ValueError:
        raise PeerCodecError(f"unknown message type {mtype}") from None
    pos = _HEADER.size
    end = pos + context_len
    _need(end, total, "context")
    context = bytes(view[pos:end])
    pos = end
    entries: list[Entry] = []
    unpack_entry = _ENTRY_HEADER.unpack_from
    entry_header_size = _ENTRY_HEADER.size
    entry_types = _ENTRY_TYPES
    for _ in range(n_entries):
        _need(pos + entry_header_size, total, "entry header")
        e_term, e_index, e_type, data_len = unpack_entry(view, pos)
        pos += entry_header_size
        end = pos + data_len
        _need(end, total, "entry data")
        if e_type >= len(entry_types):
            raise PeerCodecError(f"unknown entry type {e_type}")
        entries.append(Entry(e_term, e_index, entry_types[e_type], bytes(view[pos:end])))
        pos = end
    snapshot: Snapshot | None = None
    detached: int | None = None
    if flags & FLAG_SNAPSHOT:
        _need(pos + _SNAPSHOT_HEADER.size, total, "snapshot header")
        s_index, s_term, n_voters, n_learners = _SNAPSHOT_HEADER.unpack_from(view, pos)
        pos += _SNAPSHOT_HEADER.size
        n_ids = n_voters + n_learners
        end = pos + 8 * n_ids
        _need(end, total, "snapshot membership")
        ids = struct.unpack_from(f"<{n_ids}Q", view, pos) if n_ids else ()
        pos = end
        _need(pos + _SNAPSHOT_DATA_LEN.size, total, "snapshot data length")
        (data_len,) = _SNAPSHOT_DATA_LEN.unpack_from(view, pos)
        pos += _SNAPSHOT_DATA_LEN.size
        if flags & FLAG_SNAPSHOT_DATA_DETACHED:
            data = b""
            detached = data_len
        else:
            end = pos + data_len
            _need(end, total, "snapshot data")
            data = bytes(view[pos:end])
            pos = end
        snapshot = Snapshot(
            data=data,
            metadata=SnapshotMetadata(
                index=s_index,
                term=s_term,
                conf_state=ConfState(list(ids[:n_voters]), list(ids[n_voters:])),
            ),
        )
    if pos != total:
        raise PeerCodecError(f"{total - pos} trailing bytes after a {message_type.name} message")
    return (
        Message(
            type=message_type,
            to=to,
            from_=from_,
            term=term,
            log_term=log_term,
            index=index,
            entries=entries,
            commit=commit,
            snapshot=snapshot,
            reject=bool(flags & FLAG_REJECT),
            reject_hint=reject_hint,
            context=context,
        ),
        detached,
    )


_ENTRY_TYPES: tuple[EntryType, ...] = tuple(sorted(EntryType))
# Invariant: EntryType values are 0..n-1, so a value indexes this tuple directly.
assert all(int(t) == i for i, t in enumerate(_ENTRY_TYPES))


def _need(end: int, total: int, what: str) -> None:
    if end > total:
        raise PeerCodecError(f"message truncated in {what}: needs {end} bytes, has {total}")
