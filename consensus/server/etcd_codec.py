"""Translation between etcd's protobuf messages and the key space's plain values.

The gRPC services receive ``etcdserverpb`` messages; the replicated state
machine (``consensus.mvcc``) works on frozen dataclasses. This module is the
one place that knows both shapes. Conversions are field for field; an empty
``RequestOp`` (no request set) becomes ``KeyNotFoundError`` as in etcd.
"""

from __future__ import annotations

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.mvccpb import kv_pb2 as mvccpb
from consensus.mvcc import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResult,
    Event,
    EventType,
    KeyNotFoundError,
    KeyValue,
    PutRequest,
    PutResult,
    RangeRequest,
    RangeResult,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResult,
)
from consensus.mvcc.requests import OpResult, RequestOp

# -- requests: protobuf -> key space ---------------------------------------------------


def range_from_pb(r: pb.RangeRequest) -> RangeRequest:
    return RangeRequest(
        key=r.key,
        range_end=r.range_end,
        limit=r.limit,
        revision=r.revision,
        sort_order=SortOrder(r.sort_order),
        sort_target=SortTarget(r.sort_target),
        keys_only=r.keys_only,
        count_only=r.count_only,
        min_mod_revision=r.min_mod_revision,
        max_mod_revision=r.max_mod_revision,
        min_create_revision=r.min_create_revision,
        max_create_revision=r.max_create_revision,
    )


def put_from_pb(r: pb.PutRequest) -> PutRequest:
    return PutRequest(
        key=r.key,
        value=r.value,
        lease=r.lease,
        prev_kv=r.prev_kv,
        ignore_value=r.ignore_value,
        ignore_lease=r.ignore_lease,
    )


def delete_from_pb(r: pb.DeleteRangeRequest) -> DeleteRangeRequest:
    return DeleteRangeRequest(key=r.key, range_end=r.range_end, prev_kv=r.prev_kv)


def compare_from_pb(c: pb.Compare) -> Compare:
    target = CompareTarget(c.target)
    which = c.WhichOneof("target_union")
    operand: int | bytes
    # A union set to a field other than the target's reads as unset (etcd does the same).
    if target == CompareTarget.VALUE:
        operand = c.value if which == "value" else b""
    elif target == CompareTarget.VERSION:
        operand = c.version if which == "version" else 0
    elif target == CompareTarget.CREATE:
        operand = c.create_revision if which == "create_revision" else 0
    elif target == CompareTarget.MOD:
        operand = c.mod_revision if which == "mod_revision" else 0
    else:
        operand = c.lease if which == "lease" else 0
    return Compare(
        key=c.key,
        target=target,
        result=CompareResult(c.result),
        operand=operand,
        range_end=c.range_end,
    )


def op_from_pb(op: pb.RequestOp) -> RequestOp:
    which = op.WhichOneof("request")
    if which == "request_range":
        return range_from_pb(op.request_range)
    if which == "request_put":
        return put_from_pb(op.request_put)
    if which == "request_delete_range":
        return delete_from_pb(op.request_delete_range)
    if which == "request_txn":
        return txn_from_pb(op.request_txn)
    raise KeyNotFoundError()


def txn_from_pb(t: pb.TxnRequest) -> TxnRequest:
    return TxnRequest(
        compare=tuple(compare_from_pb(c) for c in t.compare),
        success=tuple(op_from_pb(o) for o in t.success),
        failure=tuple(op_from_pb(o) for o in t.failure),
    )


# -- results: key space -> protobuf ------------------------------------------------------


def kv_to_pb(kv: KeyValue, *, keys_only: bool = False) -> mvccpb.KeyValue:
    return mvccpb.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=b"" if keys_only else kv.value,
        lease=kv.lease,
    )


_EVENT_TYPES = {EventType.PUT: mvccpb.Event.PUT, EventType.DELETE: mvccpb.Event.DELETE}


def event_to_pb(ev: Event, *, with_prev_kv: bool) -> mvccpb.Event:
    out = mvccpb.Event(type=_EVENT_TYPES[ev.type], kv=kv_to_pb(ev.kv))
    if with_prev_kv and ev.prev_kv is not None:
        out.prev_kv.CopyFrom(kv_to_pb(ev.prev_kv))
    return out


def fill_range_response(
    out: pb.RangeResponse, res: RangeResult, *, keys_only: bool = False
) -> pb.RangeResponse:
    out.kvs.extend([kv_to_pb(kv, keys_only=keys_only) for kv in res.kvs])
    out.more = res.more
    out.count = res.count
    return out


def fill_put_response(out: pb.PutResponse, res: PutResult) -> pb.PutResponse:
    if res.prev_kv is not None:
        out.prev_kv.CopyFrom(kv_to_pb(res.prev_kv))
    return out


def fill_delete_response(out: pb.DeleteRangeResponse, res: DeleteRangeResult) -> pb.DeleteRangeResponse:
    out.deleted = res.deleted
    out.prev_kvs.extend([kv_to_pb(kv) for kv in res.prev_kvs])
    return out


def fill_txn_response(
    out: pb.TxnResponse, res: TxnResult, req: TxnRequest, header: pb.ResponseHeader
) -> pb.TxnResponse:
    """Fill a TxnResponse; ``header`` goes on the top level and on range/put/delete responses.

    etcd copies the txn's header into each non-txn response of the branch and
    leaves nested txn responses' headers empty.
    """
    out.succeeded = res.succeeded
    ops = req.success if res.succeeded else req.failure
    for op, r in zip(ops, res.responses, strict=True):
        out.responses.append(response_op_to_pb(r, op, header))
    return out


def response_op_to_pb(r: OpResult, op: RequestOp, header: pb.ResponseHeader) -> pb.ResponseOp:
    ro = pb.ResponseOp()
    if isinstance(r, RangeResult):
        assert isinstance(op, RangeRequest)
        ro.response_range.header.CopyFrom(header)
        fill_range_response(ro.response_range, r, keys_only=op.keys_only)
    elif isinstance(r, PutResult):
        ro.response_put.header.CopyFrom(header)
        fill_put_response(ro.response_put, r)
    elif isinstance(r, DeleteRangeResult):
        ro.response_delete_range.header.CopyFrom(header)
        fill_delete_response(ro.response_delete_range, r)
    else:
        assert isinstance(op, TxnRequest)
        ro.response_txn.SetInParent()
        fill_txn_response(ro.response_txn, r, op, pb.ResponseHeader())
    return ro
