"""The etcd replicated state machine: what a member applies committed entries to.

``EtcdStateMachine`` implements the member's ``StateMachine`` port on top of
the MVCC key space (``consensus.mvcc.KVStore``) plus the cluster-wide alarm
list. Each entry's payload is an :class:`InternalRequest`; apply decodes the
etcd protobuf inside, runs it, and returns the key space's result -- or the
``MVCCError`` it raised, *as a value*: a refused request is a deterministic
outcome of apply (every member refuses it alike), not a failure of the member.

Contract (``apply`` must be deterministic): the result and the new state
depend only on the state before and the entry; nothing here reads a clock,
randomness, or anything local to one member.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc import DeleteRangeRequest, Event, KVStore, MVCCError, PutRequest, TxnRequest
from consensus.server import etcd_codec as codec
from consensus.server.internal_request import InternalRequest, Op

_SNAPSHOT_MAGIC = b"FSES"
_SNAPSHOT_VERSION = 1
_U32 = struct.Struct("<I")


class NoSpaceError(MVCCError):
    """Writes are refused while the NOSPACE alarm is raised."""

    message = "etcdserver: mvcc: database space exceeded"
    grpc_code = "RESOURCE_EXHAUSTED"


class UndecodableRequestError(MVCCError):
    """An entry whose payload is not a request this version understands."""

    message = "etcdserver: undecodable request"
    grpc_code = "INVALID_ARGUMENT"


@dataclass(frozen=True, slots=True)
class Alarm:
    """One raised alarm: which member and which kind (``etcdserverpb.AlarmType``)."""

    member_id: int
    alarm: int


RevisionListener = Callable[[int, tuple[Event, ...]], None]


class EtcdStateMachine:
    """The key space, the alarms, and the apply of every replicated etcd request."""

    def __init__(self, *, max_txn_ops: int = 128, min_lease_ttl: int = 2) -> None:
        self.max_txn_ops = max_txn_ops
        self.min_lease_ttl = min_lease_ttl
        self.kv = KVStore(max_txn_ops=max_txn_ops, min_lease_ttl=min_lease_ttl)
        self.alarms: set[Alarm] = set()
        self._applied_index = 0
        self._revision_listeners: list[RevisionListener] = []
        self._restore_listeners: list[Callable[[], None]] = []
        self._unsubscribe = self.kv.subscribe(self._on_revision)

    # -- observation --------------------------------------------------------------------
    @property
    def applied_index(self) -> int:
        return self._applied_index

    def on_revision(self, listener: RevisionListener) -> Callable[[], None]:
        """Call ``listener(revision, events)`` after every new revision (the watch hub)."""
        self._revision_listeners.append(listener)
        return lambda: self._revision_listeners.remove(listener)

    def on_restore(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after the whole state was replaced by a snapshot."""
        self._restore_listeners.append(listener)

    def _on_revision(self, revision: int, events: tuple[Event, ...]) -> None:
        for listener in list(self._revision_listeners):
            listener(revision, events)

    def has_alarm(self, alarm: int) -> bool:
        return any(a.alarm == alarm for a in self.alarms)

    # -- StateMachine port ----------------------------------------------------------------
    def apply(self, index: int, term: int, data: bytes) -> object:
        if index <= self._applied_index:
            raise ValueError(f"entry {index} applied after {self._applied_index}")
        self._applied_index = index
        if not data:
            return None
        try:
            req = InternalRequest.decode(data)
        except (ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
            # Every member decodes the same bytes alike: a deterministic refusal.
            return UndecodableRequestError(f"etcdserver: undecodable request: {exc}")
        try:
            return self._apply_request(req)
        except MVCCError as exc:
            return exc
        except DecodeError as exc:
            return UndecodableRequestError(f"etcdserver: undecodable request: {exc}")

    def _apply_request(self, req: InternalRequest) -> object:
        op = req.op
        nospace = self.has_alarm(pb.NOSPACE)
        if op == Op.PUT:
            if nospace:
                raise NoSpaceError()
            return self.kv.put(codec.put_from_pb(pb.PutRequest.FromString(req.body)))
        if op == Op.DELETE_RANGE:
            return self.kv.delete_range(
                codec.delete_from_pb(pb.DeleteRangeRequest.FromString(req.body))
            )
        if op == Op.TXN:
            txn = codec.txn_from_pb(pb.TxnRequest.FromString(req.body))
            if nospace and _txn_writes(txn):
                raise NoSpaceError()
            return self.kv.txn(txn)
        if op == Op.COMPACTION:
            creq = pb.CompactionRequest.FromString(req.body)
            self.kv.compact(creq.revision)
            return creq.revision
        if op == Op.LEASE_GRANT:
            if nospace:
                raise NoSpaceError()
            greq = pb.LeaseGrantRequest.FromString(req.body)
            return self.kv.lease_grant(greq.ID, greq.TTL)
        if op == Op.LEASE_REVOKE:
            rreq = pb.LeaseRevokeRequest.FromString(req.body)
            return self.kv.lease_revoke(rreq.ID)
        if op == Op.LEASE_CHECKPOINT:
            ck = pb.LeaseKeepAliveResponse.FromString(req.body)
            self.kv.lease_checkpoint(ck.ID, ck.TTL)
            return None
        if op == Op.ALARM:
            areq = pb.AlarmRequest.FromString(req.body)
            return self._apply_alarm(areq)
        raise ValueError(f"unknown request op {op!r}")

    def _apply_alarm(self, req: pb.AlarmRequest) -> list[Alarm]:
        if req.action == pb.AlarmRequest.GET:
            return sorted(self.alarms, key=lambda a: (a.member_id, a.alarm))
        if req.action == pb.AlarmRequest.ACTIVATE:
            if req.alarm == pb.NONE:
                return []
            a = Alarm(req.memberID, req.alarm)
            self.alarms.add(a)
            return [a]
        # DEACTIVATE: memberID 0 with alarm NONE clears nothing (as etcd).
        gone = {
            a
            for a in self.alarms
            if a.member_id == req.memberID and (req.alarm == pb.NONE or a.alarm == req.alarm)
        }
        self.alarms -= gone
        return sorted(gone, key=lambda a: (a.member_id, a.alarm))

    def snapshot(self) -> bytes:
        kv_bytes = self.kv.to_bytes()
        alarms = sorted(self.alarms, key=lambda a: (a.member_id, a.alarm))
        parts = [_SNAPSHOT_MAGIC, bytes([_SNAPSHOT_VERSION]), _U32.pack(len(alarms))]
        for a in alarms:
            parts.append(struct.pack("<QI", a.member_id, a.alarm))
        parts.append(kv_bytes)
        return b"".join(parts)

    def restore(self, data: bytes, index: int) -> None:
        if data[:4] != _SNAPSHOT_MAGIC or data[4] != _SNAPSHOT_VERSION:
            raise ValueError("not an etcd state machine snapshot (bad magic or version)")
        pos = 5
        (n,) = _U32.unpack_from(data, pos)
        pos += 4
        alarms: set[Alarm] = set()
        for _ in range(n):
            member_id, alarm = struct.unpack_from("<QI", data, pos)
            pos += 12
            alarms.add(Alarm(member_id, alarm))
        kv = KVStore.from_bytes(
            data[pos:], max_txn_ops=self.max_txn_ops, min_lease_ttl=self.min_lease_ttl
        )
        self._unsubscribe()
        self.kv = kv
        self._unsubscribe = self.kv.subscribe(self._on_revision)
        self.alarms = alarms
        self._applied_index = index
        for listener in list(self._restore_listeners):
            listener()


def _txn_writes(txn: TxnRequest) -> bool:
    """Whether any op of either branch (nested included) writes."""
    for op in (*txn.success, *txn.failure):
        if isinstance(op, PutRequest | DeleteRangeRequest):
            return True
        if isinstance(op, TxnRequest) and _txn_writes(op):
            return True
    return False
