"""Pre-encoded ``WatchResponse`` bytes for event messages: each event is serialized once.

A revision watched by N watchers becomes N ``WatchResponse`` messages that
differ only in ``watch_id``. Built as protobuf objects, every one of them
converts and serializes the same events again. :class:`WatchResponseEncoder`
writes the wire bytes directly instead: the header field once per revision,
each event field once (for either ``prev_kv`` choice), and per message only
the ``watch_id`` field. Protobuf messages concatenate: the bytes parse to
exactly the message the protobuf path builds.

Only plain event messages take this path (events, a non-negative watch id,
no created/canceled/compaction/fragment flags); :meth:`WatchResponseEncoder.encode`
returns None for every other message, which the caller builds as before.
The gRPC layer passes ``bytes`` responses through unserialized (see
``etcd_server``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc.kv import Event
from consensus.mvcc.watch_hub import WatchMessage
from consensus.server import etcd_codec as codec

_FIELDS = pb.WatchResponse.DESCRIPTOR.fields_by_name
_LEN_DELIMITED = 2
_VARINT = 0
_HEADER_TAG = bytes([_FIELDS["header"].number << 3 | _LEN_DELIMITED])
_WATCH_ID_TAG = bytes([_FIELDS["watch_id"].number << 3 | _VARINT])
_EVENT_TAG = bytes([_FIELDS["events"].number << 3 | _LEN_DELIMITED])

CACHE_EVENTS = 4096
"""Encoded events kept; the cache is emptied when it holds more (events arrive in revision order)."""


def varint(n: int) -> bytes:
    """``n >= 0`` as a protobuf base-128 varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class WatchResponseEncoder:
    """Encodes plain event messages of one server's watch streams (see the module docstring)."""

    def __init__(self, header: Callable[[int], pb.ResponseHeader], term: Callable[[], int]) -> None:
        self._header = header
        """The server's response header at a revision (its cluster and member ids never change)."""
        self._term = term
        self._last_header: tuple[tuple[int, int], bytes] = ((-1, -1), b"")
        """((revision, term), the header field's bytes) of the last message encoded."""
        self._events: dict[tuple[int, bool], tuple[Event, bytes]] = {}
        """(id(event), prev_kv) -> (the event, kept alive so its id stays its own; its field bytes)."""

    def encode(self, m: WatchMessage) -> bytes | None:
        """The wire bytes of ``m``'s ``WatchResponse``, or None if ``m`` is not a plain event message."""
        if (
            not m.events or m.created or m.canceled or m.compact_revision or m.cancel_reason
            or m.fragment or m.watch_id < 0
        ):
            return None
        key = (m.revision, self._term())
        last = self._last_header
        if last[0] != key:
            header = self._header(m.revision).SerializeToString()
            last = (key, _HEADER_TAG + varint(len(header)) + header)
            self._last_header = last
        parts = [last[1]]
        if m.watch_id:
            parts.append(_WATCH_ID_TAG + varint(m.watch_id))
        parts.extend(self._event_fields(m.events, m.prev_kv))
        return b"".join(parts)

    def _event_fields(self, events: Sequence[Event], prev_kv: bool) -> list[bytes]:
        cache = self._events
        out: list[bytes] = []
        for ev in events:
            hit = cache.get((id(ev), prev_kv))
            if hit is not None and hit[0] is ev:
                out.append(hit[1])
                continue
            body = codec.event_to_pb(ev, with_prev_kv=prev_kv).SerializeToString()
            field = _EVENT_TAG + varint(len(body)) + body
            if len(cache) >= CACHE_EVENTS:
                cache.clear()
            cache[(id(ev), prev_kv)] = (ev, field)
            out.append(field)
        return out
