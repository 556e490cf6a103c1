"""Builders for etcd's KV requests: Range, Put, DeleteRange, Txn, and a txn's compares and ops.

The :class:`~consensus.client.Client` KV calls and the transaction helpers
share these, so a ``Client.put(...)`` and an ``op_put(...)`` inside a txn
accept the same arguments. Everything returns the plain ``etcdserverpb``
message. A compare-and-swap reads::

    resp = await client.txn(
        compare=[compare_mod("/flags/a", "=", 42)],
        success=[op_put("/flags/a", new_doc)],
        failure=[op_get("/flags/a")],
    )

Comparison operators are ``"="`` (or ``"=="``), ``"!="``, ``"<"`` and ``">"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client.keys import KeyLike, to_bytes

CompareOp = Literal["=", "==", "!=", "<", ">"]
SortOrder = Literal["none", "ascend", "descend"]
SortTarget = Literal["key", "version", "create", "mod", "value"]

_COMPARE_RESULT: dict[str, pb.Compare.CompareResult] = {
    "=": pb.Compare.EQUAL,
    "==": pb.Compare.EQUAL,
    "!=": pb.Compare.NOT_EQUAL,
    "<": pb.Compare.LESS,
    ">": pb.Compare.GREATER,
}

_SORT_ORDER: dict[str, pb.RangeRequest.SortOrder] = {
    "none": pb.RangeRequest.NONE,
    "ascend": pb.RangeRequest.ASCEND,
    "descend": pb.RangeRequest.DESCEND,
}

_SORT_TARGET: dict[str, pb.RangeRequest.SortTarget] = {
    "key": pb.RangeRequest.KEY,
    "version": pb.RangeRequest.VERSION,
    "create": pb.RangeRequest.CREATE,
    "mod": pb.RangeRequest.MOD,
    "value": pb.RangeRequest.VALUE,
}


def range_request(
    key: KeyLike,
    range_end: KeyLike = b"",
    *,
    limit: int = 0,
    revision: int = 0,
    serializable: bool = False,
    keys_only: bool = False,
    count_only: bool = False,
    sort_order: SortOrder = "none",
    sort_target: SortTarget = "key",
    min_mod_revision: int = 0,
    max_mod_revision: int = 0,
    min_create_revision: int = 0,
    max_create_revision: int = 0,
) -> pb.RangeRequest:
    """A RangeRequest; ``range_end`` empty means the single ``key``."""
    try:
        order = _SORT_ORDER[sort_order]
        target = _SORT_TARGET[sort_target]
    except KeyError as exc:
        raise ValueError(f"unknown sort order/target {exc.args[0]!r}") from None
    return pb.RangeRequest(
        key=to_bytes(key),
        range_end=to_bytes(range_end),
        limit=limit,
        revision=revision,
        serializable=serializable,
        keys_only=keys_only,
        count_only=count_only,
        sort_order=order,
        sort_target=target,
        min_mod_revision=min_mod_revision,
        max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision,
        max_create_revision=max_create_revision,
    )


def put_request(
    key: KeyLike,
    value: KeyLike,
    *,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> pb.PutRequest:
    """A PutRequest."""
    return pb.PutRequest(
        key=to_bytes(key),
        value=to_bytes(value),
        lease=lease,
        prev_kv=prev_kv,
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


def delete_request(
    key: KeyLike, range_end: KeyLike = b"", *, prev_kv: bool = False
) -> pb.DeleteRangeRequest:
    """A DeleteRangeRequest; ``range_end`` empty means the single ``key``."""
    return pb.DeleteRangeRequest(key=to_bytes(key), range_end=to_bytes(range_end), prev_kv=prev_kv)


def txn_request(
    compare: Iterable[pb.Compare] = (),
    success: Iterable[pb.RequestOp] = (),
    failure: Iterable[pb.RequestOp] = (),
) -> pb.TxnRequest:
    """A TxnRequest: if every compare holds, the success ops run, else the failure ops."""
    return pb.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))


def _compare(
    key: KeyLike, op: CompareOp, target: pb.Compare.CompareTarget, range_end: KeyLike
) -> pb.Compare:
    try:
        result = _COMPARE_RESULT[op]
    except KeyError:
        raise ValueError(f"unknown comparison {op!r}; use one of = != < >") from None
    return pb.Compare(result=result, target=target, key=to_bytes(key), range_end=to_bytes(range_end))


def compare_value(
    key: KeyLike, op: CompareOp, value: KeyLike, *, range_end: KeyLike = b""
) -> pb.Compare:
    """Compare the key's value (bytes order) with ``value``."""
    cmp = _compare(key, op, pb.Compare.VALUE, range_end)
    cmp.value = to_bytes(value)
    return cmp


def compare_version(
    key: KeyLike, op: CompareOp, version: int, *, range_end: KeyLike = b""
) -> pb.Compare:
    """Compare the key's version (0: the key does not exist)."""
    cmp = _compare(key, op, pb.Compare.VERSION, range_end)
    cmp.version = version
    return cmp


def compare_create(
    key: KeyLike, op: CompareOp, revision: int, *, range_end: KeyLike = b""
) -> pb.Compare:
    """Compare the key's create revision (0: the key does not exist)."""
    cmp = _compare(key, op, pb.Compare.CREATE, range_end)
    cmp.create_revision = revision
    return cmp


def compare_mod(
    key: KeyLike, op: CompareOp, revision: int, *, range_end: KeyLike = b""
) -> pb.Compare:
    """Compare the key's mod revision (0: the key does not exist) — the CAS compare."""
    cmp = _compare(key, op, pb.Compare.MOD, range_end)
    cmp.mod_revision = revision
    return cmp


def compare_lease(
    key: KeyLike, op: CompareOp, lease: int, *, range_end: KeyLike = b""
) -> pb.Compare:
    """Compare the key's lease ID (0: no lease)."""
    cmp = _compare(key, op, pb.Compare.LEASE, range_end)
    cmp.lease = lease
    return cmp


def op_get(
    key: KeyLike,
    range_end: KeyLike = b"",
    *,
    limit: int = 0,
    revision: int = 0,
    serializable: bool = False,
    keys_only: bool = False,
    count_only: bool = False,
    sort_order: SortOrder = "none",
    sort_target: SortTarget = "key",
) -> pb.RequestOp:
    """A txn op that reads ``key`` (or ``[key, range_end)``)."""
    return pb.RequestOp(
        request_range=range_request(
            key,
            range_end,
            limit=limit,
            revision=revision,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            sort_order=sort_order,
            sort_target=sort_target,
        )
    )


def op_put(
    key: KeyLike,
    value: KeyLike,
    *,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> pb.RequestOp:
    """A txn op that writes ``key``."""
    return pb.RequestOp(
        request_put=put_request(
            key,
            value,
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )
    )


def op_delete(key: KeyLike, range_end: KeyLike = b"", *, prev_kv: bool = False) -> pb.RequestOp:
    """A txn op that deletes ``key`` (or ``[key, range_end)``)."""
    return pb.RequestOp(request_delete_range=delete_request(key, range_end, prev_kv=prev_kv))


def op_txn(
    compare: Iterable[pb.Compare] = (),
    success: Iterable[pb.RequestOp] = (),
    failure: Iterable[pb.RequestOp] = (),
) -> pb.RequestOp:
    """A nested txn as an op of an outer txn."""
    return pb.RequestOp(request_txn=txn_request(compare, success, failure))


def txn_writes(ops: Iterable[pb.RequestOp]) -> bool:
    """Whether any of ``ops`` (nested txns included) can change the store.

    A txn of reads only is retried like a read; anything else is a mutation.
    """
    for op in ops:
        kind = op.WhichOneof("request")
        if kind in ("request_put", "request_delete_range"):
            return True
        if kind == "request_txn" and txn_writes([*op.request_txn.success, *op.request_txn.failure]):
            return True
    return False
