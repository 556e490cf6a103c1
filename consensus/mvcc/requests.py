"""The operations the key space applies and what they return, as plain values.

They mirror etcd's ``etcdserverpb`` request and response messages field for
field (minus the response headers: each result carries the one number of the
header the key space decides, ``revision``), so the gRPC layer translates
one-to-one. Requests are immutable; a txn's branches hold other requests,
including nested txns.

Keys follow etcd's range convention (see ``keyrange``): ``range_end`` empty
is one key, ``b"\\x00"`` is every key from ``key`` on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from consensus.mvcc.kv import KeyValue


class SortOrder(enum.IntEnum):
    """``RangeRequest.SortOrder``."""

    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.IntEnum):
    """``RangeRequest.SortTarget``: the field a sorted Range orders by."""

    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareTarget(enum.IntEnum):
    """``Compare.CompareTarget``: the field a txn guard inspects."""

    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class CompareResult(enum.IntEnum):
    """``Compare.CompareResult``: how the field must relate to the operand."""

    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """A read of the keys in ``[key, range_end)`` (``etcdserverpb.RangeRequest``).

    ``revision <= 0`` reads the current state. ``serializable`` is absent: it
    is a choice of the server's read path, not of the key space.
    """

    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    """A write of one key (``etcdserverpb.PutRequest``); ``lease == 0`` is no lease."""

    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    """A deletion of the keys in ``[key, range_end)`` (``etcdserverpb.DeleteRangeRequest``)."""

    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    """A txn guard (``etcdserverpb.Compare``).

    ``operand`` is the ``target_union`` value: bytes for ``VALUE``, an int for
    the other targets. An operand of the wrong kind counts as etcd's unset
    union (0, or the empty value), which is what etcd does with a mismatched
    union. With a ``range_end`` every key in the range must satisfy the guard.
    """

    key: bytes
    target: CompareTarget
    result: CompareResult
    operand: int | bytes = 0
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class TxnRequest:
    """A guarded multi-op (``etcdserverpb.TxnRequest``); ops may be nested txns."""

    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


RequestOp = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest
"""One op of a txn branch (``etcdserverpb.RequestOp``). An empty ``RequestOp``
on the wire has no counterpart here: the gRPC layer rejects it with
``KeyNotFoundError``, as etcd does."""


@dataclass(slots=True)
class RangeResult:
    """What a Range returns (``etcdserverpb.RangeResponse``).

    ``count`` is the number of keys in the range at the read revision, before
    ``limit`` and before the min/max revision filters (etcd's definition);
    ``more`` says whether ``limit`` cut the (filtered) result short.
    ``revision`` is the store's revision when the read ran, not the revision
    read at.
    """

    kvs: list[KeyValue]
    more: bool
    count: int
    revision: int


@dataclass(slots=True)
class PutResult:
    """What a Put returns (``etcdserverpb.PutResponse``): the new revision."""

    revision: int
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class DeleteRangeResult:
    """What a DeleteRange returns (``etcdserverpb.DeleteRangeResponse``).

    ``revision`` is the new revision, or the unchanged current one when
    nothing was deleted (and, inside a txn, nothing was written before).
    """

    revision: int
    deleted: int
    prev_kvs: list[KeyValue] = field(default_factory=list)


@dataclass(slots=True)
class TxnResult:
    """What a Txn returns (``etcdserverpb.TxnResponse``).

    ``responses`` answer the ops of the branch taken, in order. ``revision``
    is the new revision when the txn wrote, else the current one; for a
    nested txn it is 0, because etcd leaves a nested response's header empty.
    """

    succeeded: bool
    responses: list[OpResult]
    revision: int


OpResult = RangeResult | PutResult | DeleteRangeResult | TxnResult
"""One entry of ``TxnResult.responses`` (``etcdserverpb.ResponseOp``)."""


@dataclass(frozen=True, slots=True)
class HashKVResult:
    """What HashKV returns (``etcdserverpb.HashKVResponse`` minus the header)."""

    hash: int
    compact_revision: int
    hash_revision: int
