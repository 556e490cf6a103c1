"""Pre-encoded watch responses (``consensus.server.watch_encoding``) parse to the protobuf path's messages."""

from __future__ import annotations

import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc.kv import Event, EventType, KeyValue
from consensus.mvcc.watch_hub import WatchMessage
from consensus.server import etcd_codec as codec
from consensus.server.watch_encoding import WatchResponseEncoder

TERM = 7


def _header(revision: int) -> pb.ResponseHeader:
    return pb.ResponseHeader(cluster_id=0xC1, member_id=0xA11CE, revision=revision, raft_term=TERM)


def _reference(m: WatchMessage) -> pb.WatchResponse:
    """The message as the protobuf path builds it."""
    out = pb.WatchResponse(
        header=_header(m.revision), watch_id=m.watch_id, created=m.created, canceled=m.canceled,
        compact_revision=m.compact_revision, cancel_reason=m.cancel_reason,
    )
    out.events.extend([codec.event_to_pb(e, with_prev_kv=m.prev_kv) for e in m.events])
    return out


def _events(revision: int) -> tuple[Event, ...]:
    old = KeyValue(b"k1", 3, 3, 1, b"before", 0)
    return (
        Event(EventType.PUT, KeyValue(b"k1", 3, revision, 2, b"v" * 300, 0x55), old),
        Event(EventType.DELETE, KeyValue(b"k2", 0, revision, 0, b"", 0), None),
    )


@pytest.mark.parametrize("watch_id", [0, 1, 300, 2**40])
@pytest.mark.parametrize("prev_kv", [False, True])
def test_event_messages_parse_to_the_same_response(watch_id: int, prev_kv: bool) -> None:
    encoder = WatchResponseEncoder(_header, lambda: TERM)
    events = _events(12)
    for revision in (12, 12, 13):  # the second one comes from the caches
        m = WatchMessage(watch_id, revision, events, prev_kv=prev_kv)
        raw = encoder.encode(m)
        assert raw is not None
        assert pb.WatchResponse.FromString(raw) == _reference(m)


def test_other_messages_take_the_protobuf_path() -> None:
    encoder = WatchResponseEncoder(_header, lambda: TERM)
    events = _events(5)
    for m in (
        WatchMessage(1, 5),  # no events (progress)
        WatchMessage(1, 5, created=True),
        WatchMessage(1, 5, canceled=True, cancel_reason="gone"),
        WatchMessage(1, 0, canceled=True, compact_revision=4),
        WatchMessage(1, 5, events, fragment=True),
        WatchMessage(-1, 5, events),
    ):
        assert encoder.encode(m) is None


def test_a_new_term_changes_the_header() -> None:
    term = [TERM]
    encoder = WatchResponseEncoder(
        lambda r: pb.ResponseHeader(revision=r, raft_term=term[0]), lambda: term[0]
    )
    m = WatchMessage(3, 9, _events(9))
    first = encoder.encode(m)
    term[0] += 1
    second = encoder.encode(m)
    assert first is not None and second is not None
    assert pb.WatchResponse.FromString(second).header.raft_term == TERM + 1
    assert pb.WatchResponse.FromString(first).header.raft_term == TERM
