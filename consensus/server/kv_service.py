"""The etcd ``KV`` service: Range, Put, DeleteRange, Txn and Compact.

Reads are linearizable by default (a batched ReadIndex barrier, then the
local key space) and local when ``serializable`` is set. A txn with no writes
in either branch is answered like a read (after a barrier); every other
mutation goes through Raft.
"""

from __future__ import annotations

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc as pb_grpc
from consensus.mvcc import (
    DeleteRangeRequest,
    DeleteRangeResult,
    EmptyKeyError,
    PutRequest,
    PutResult,
    TxnRequest,
    TxnResult,
)
from consensus.server import etcd_codec as codec
from consensus.server.authorization import Need, authorize, authorize_range, authorize_txn
from consensus.server.etcd_server import EtcdServer, unary
from consensus.server.internal_request import Op


def _txn_is_read_only(txn: TxnRequest) -> bool:
    for op in (*txn.success, *txn.failure):
        if isinstance(op, PutRequest | DeleteRangeRequest):
            return False
        if isinstance(op, TxnRequest) and not _txn_is_read_only(op):
            return False
    return True


class KVService(pb_grpc.KVServicer):
    """etcdserverpb.KV on top of one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    @unary
    async def Range(self, request: pb.RangeRequest, context: grpc.aio.ServicerContext) -> pb.RangeResponse:
        self.s.check_has_leader(context)
        if not request.key:
            raise EmptyKeyError()
        req = codec.range_from_pb(request)
        if not request.serializable:
            await self.s.linearizable_barrier()
        authorize_range(self.s, context, request.key, request.range_end)
        res = self.s.fsm.kv.range(req)
        out = pb.RangeResponse(header=self.s.header(res.revision))
        return codec.fill_range_response(out, res, keys_only=request.keys_only)

    @unary
    async def Put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> pb.PutResponse:
        self.s.check_has_leader(context)
        if not request.key:
            raise EmptyKeyError()
        res = await self.s.propose(Op.PUT, request, context)
        assert isinstance(res, PutResult)
        return codec.fill_put_response(pb.PutResponse(header=self.s.header(res.revision)), res)

    @unary
    async def DeleteRange(
        self, request: pb.DeleteRangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteRangeResponse:
        self.s.check_has_leader(context)
        if not request.key:
            raise EmptyKeyError()
        res = await self.s.propose(Op.DELETE_RANGE, request, context)
        assert isinstance(res, DeleteRangeResult)
        out = pb.DeleteRangeResponse(header=self.s.header(res.revision))
        return codec.fill_delete_response(out, res)

    @unary
    async def Txn(self, request: pb.TxnRequest, context: grpc.aio.ServicerContext) -> pb.TxnResponse:
        self.s.check_has_leader(context)
        txn = codec.txn_from_pb(request)
        if _txn_is_read_only(txn):
            # Validate exactly as apply would, then serve locally after a barrier.
            await self.s.linearizable_barrier()
            authorize_txn(self.s, context, request)
            res = self.s.fsm.kv.txn(txn)
        else:
            applied = await self.s.propose(Op.TXN, request, context)
            assert isinstance(applied, TxnResult)
            res = applied
        header = self.s.header(res.revision)
        return codec.fill_txn_response(pb.TxnResponse(header=header), res, txn, header)

    @unary
    async def Compact(
        self, request: pb.CompactionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompactionResponse:
        self.s.check_has_leader(context)
        authorize(self.s, context, Need.ADMIN)  # stricter than etcd 3.4 (no check there)
        await self.s.propose(Op.COMPACTION, request, context)
        return pb.CompactionResponse(header=self.s.header())


def register(server: EtcdServer) -> KVService:
    service = KVService(server)
    server.add_service(pb_grpc.add_KVServicer_to_server, service)
    return service
