"""What a member writes into log entries so that the proposer can recognise its own requests.

Every NORMAL entry a member proposes is ``header | payload`` with header
``kind u8 (=1) | proposer member id u64 | request id u64`` (little-endian).
When the entry is applied, on every member, the payload goes to the state
machine; on the member whose id is in the header, the waiting caller with
that request id gets the state machine's result. Empty entries (a new
leader's no-op) carry no header.

Conf change entries carry the same pair in ``ConfChange.context``, a small
JSON document that also names the member being added (name and URLs).

A NORMAL entry whose kind byte is 2 instead carries new attributes of one
member (etcd's publish of name and client URLs, and MemberUpdate's peer
URLs): ``kind u8 (=2) | proposer u64 | request id u64 | JSON``. The member
applies it to its membership table; the state machine sees a no-op.

Invariant: (proposer, request id) is unique across the cluster's history:
member ids are unique and a member's request ids increase from a wall-clock
seed at start-up, so a restarted member does not reuse its old ids.
"""

from __future__ import annotations

import itertools
import json
import struct
import time
from dataclasses import dataclass

from consensus.server.membership import MemberInfo

_HEADER = struct.Struct("<BQQ")
_KIND_REQUEST = 1
_KIND_MEMBER_ATTRIBUTES = 2

HEADER_SIZE = _HEADER.size
"""Bytes the envelope adds to every proposed payload."""


class ProposalFormatError(ValueError):
    """An entry's data is not an envelope this member understands."""


class RequestIdGenerator:
    """A source of increasing request ids, seeded from the wall clock (microseconds)."""

    def __init__(self) -> None:
        self._next = itertools.count(time.time_ns() // 1000)

    def next(self) -> int:
        return next(self._next) & 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """Who proposed an entry and under which request id."""

    proposer: int
    request_id: int


def encode_request(header: RequestHeader, payload: bytes) -> bytes:
    """The entry data for ``payload`` proposed under ``header``."""
    return _HEADER.pack(_KIND_REQUEST, header.proposer, header.request_id) + payload


def decode_request(data: bytes) -> tuple[RequestHeader | None, bytes]:
    """Split a NORMAL entry's data into its header (None for an empty no-op) and payload."""
    if not data:
        return None, b""
    if len(data) < _HEADER.size or data[0] != _KIND_REQUEST:
        raise ProposalFormatError(f"entry data of {len(data)} bytes has no request envelope")
    _, proposer, request_id = _HEADER.unpack_from(data, 0)
    return RequestHeader(proposer, request_id), data[_HEADER.size :]


def encode_conf_change_context(header: RequestHeader, member: MemberInfo | None) -> bytes:
    """``ConfChange.context`` naming the proposer, its request id and the member's identity."""
    return json.dumps(
        {
            "proposer": header.proposer,
            "request_id": header.request_id,
            "member": member.to_json() if member is not None else None,
        },
        separators=(",", ":"),
    ).encode()


def decode_conf_change_context(context: bytes) -> tuple[RequestHeader | None, MemberInfo | None]:
    """The header and member of a conf change; ``(None, None)`` for a context-less change.

    Changes written by ``RawNode.bootstrap`` carry no context: their members
    are named by the initial cluster instead.
    """
    if not context:
        return None, None
    try:
        obj = json.loads(context)
        header = RequestHeader(int(obj["proposer"]), int(obj["request_id"]))
        member = MemberInfo.from_json(obj["member"]) if obj.get("member") else None
    except (ValueError, KeyError, TypeError) as exc:
        raise ProposalFormatError(f"conf change context is not valid: {exc}") from None
    return header, member


@dataclass(frozen=True, slots=True)
class MemberAttributes:
    """New attributes for one member; ``None`` leaves a field as it is."""

    member_id: int
    name: str | None = None
    client_urls: list[str] | None = None
    peer_urls: list[str] | None = None


def is_member_attributes(data: bytes) -> bool:
    """Whether a NORMAL entry's data is a member-attributes update (not a request)."""
    return len(data) >= _HEADER.size and data[0] == _KIND_MEMBER_ATTRIBUTES


def encode_member_attributes(header: RequestHeader, attributes: MemberAttributes) -> bytes:
    """The entry data replicating ``attributes`` under ``header``."""
    body = json.dumps(
        {
            "member_id": attributes.member_id,
            "name": attributes.name,
            "client_urls": attributes.client_urls,
            "peer_urls": attributes.peer_urls,
        },
        separators=(",", ":"),
    ).encode()
    return _HEADER.pack(_KIND_MEMBER_ATTRIBUTES, header.proposer, header.request_id) + body


def decode_member_attributes(data: bytes) -> tuple[RequestHeader, MemberAttributes]:
    """The header and attributes of an entry :func:`is_member_attributes` accepted."""
    if not is_member_attributes(data):
        raise ProposalFormatError("entry data is not a member-attributes update")
    _, proposer, request_id = _HEADER.unpack_from(data, 0)
    try:
        obj = json.loads(data[_HEADER.size :])
        attributes = MemberAttributes(
            member_id=int(obj["member_id"]),
            name=None if obj.get("name") is None else str(obj["name"]),
            client_urls=_url_list(obj.get("client_urls")),
            peer_urls=_url_list(obj.get("peer_urls")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ProposalFormatError(f"member attributes are not valid: {exc}") from None
    return RequestHeader(proposer, request_id), attributes


def _url_list(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise TypeError("URLs must be a list")
    return [str(u) for u in value]
