"""Round trips of the peer message codec, and its refusal of damaged buffers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from consensus.server.peer_codec import (
    PeerCodecError,
    attach_snapshot_data,
    decode_message,
    decode_message_with_detached_size,
    encode_message,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
small_bytes = st.binary(max_size=64)

entries = st.builds(
    Entry,
    term=u64,
    index=u64,
    type=st.sampled_from(list(EntryType)),
    data=small_bytes,
)
snapshots = st.builds(
    Snapshot,
    data=st.binary(max_size=256),
    metadata=st.builds(
        SnapshotMetadata,
        index=u64,
        term=u64,
        conf_state=st.builds(
            ConfState,
            voters=st.lists(u64, max_size=7),
            learners=st.lists(u64, max_size=3),
        ),
    ),
)
messages = st.builds(
    Message,
    type=st.sampled_from(list(MessageType)),
    to=u64,
    from_=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=6),
    commit=u64,
    snapshot=st.none() | snapshots,
    reject=st.booleans(),
    reject_hint=u64,
    context=small_bytes,
)


@given(messages)
def test_every_message_round_trips(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


@given(messages)
def test_detached_snapshot_data_is_reattached(m: Message) -> None:
    encoded = encode_message(m, with_snapshot_data=False)
    decoded, detached = decode_message_with_detached_size(encoded)
    if m.snapshot is None:
        assert detached is None
        assert decoded == m
        return
    assert detached == len(m.snapshot.data)
    attach_snapshot_data(decoded, m.snapshot.data)
    assert decoded == m


@given(messages, st.data())
def test_truncated_buffers_are_refused(m: Message, data: st.DataObject) -> None:
    encoded = encode_message(m)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(PeerCodecError):
        decode_message(encoded[:cut])


@given(messages)
def test_trailing_bytes_are_refused(m: Message) -> None:
    with pytest.raises(PeerCodecError):
        decode_message(encode_message(m) + b"\x00")


def test_unknown_message_type_is_refused() -> None:
    encoded = bytearray(encode_message(Message(type=MessageType.APP)))
    encoded[0] = 250
    with pytest.raises(PeerCodecError, match="unknown message type"):
        decode_message(bytes(encoded))
