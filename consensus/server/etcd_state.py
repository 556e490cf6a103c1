"""The etcd replicated state machine: what a member applies committed entries to.

``EtcdStateMachine`` implements the member's ``StateMachine`` port on top of
the MVCC key space (``consensus.mvcc.KVStore``) plus the cluster-wide alarm
list. Each entry's payload is an :class:`InternalRequest`; apply decodes the
etcd protobuf inside, runs it, and returns the key space's result -- or the
``MVCCError`` it raised, *as a value*: a refused request is a deterministic
outcome of apply (every member refuses it alike), not a failure of the member.

Every applied mutation also gets its audit record here, in the same apply
(``audit``, see :mod:`consensus.mvcc.audit`): the key space's commit hook
appends it with the entry's time, principal, actor, reason and source, so no
change exists without its record.

Contract (``apply`` must be deterministic): the result and the new state
depend only on the state before and the entry; nothing here reads a clock,
randomness, or anything local to one member.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from crc32c import crc32c
from google.protobuf.message import DecodeError

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.flagstaff.audit.v1 import audit_pb2
from consensus.mvcc import Event, KVStore, MVCCError, PutRequest, TxnRequest
from consensus.mvcc.audit import AuditLog
from consensus.server import etcd_codec as codec
from consensus.server import failpoints
from consensus.server.audit_access import (
    action_of,
    check_append,
    check_audit_metadata,
    describe_auth,
)
from consensus.server.auth_store import AuthStore
from consensus.server.authorization import check_apply
from consensus.server.internal_request import InternalRequest, Op

_SNAPSHOT_MAGIC = b"FSES"
_SNAPSHOT_VERSION = 4
"""v2 added the auth store after the alarms, v3 the audit trail after the auth store, v4 a
CRC32C of everything before it as the last 4 bytes (so a damaged state is refused as a whole,
whichever section the damage is in); older snapshots still restore (auth and audit empty)."""
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_AUDITED = frozenset({Op.PUT, Op.DELETE_RANGE, Op.TXN, Op.LEASE_REVOKE})
"""The requests whose key changes get an audit record."""


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
LeaseListener = Callable[[Op, tuple[int, ...]], None]
"""Called with (LEASE_GRANT | LEASE_REVOKE | LEASE_CHECKPOINT, the lease ids it changed)."""


class EtcdStateMachine:
    """The key space, the alarms, and the apply of every replicated etcd request."""

    def __init__(self, *, max_txn_ops: int = 128, min_lease_ttl: int = 2) -> None:
        self.max_txn_ops = max_txn_ops
        self.min_lease_ttl = min_lease_ttl
        self.kv = KVStore(max_txn_ops=max_txn_ops, min_lease_ttl=min_lease_ttl)
        self.alarms: set[Alarm] = set()
        self.auth = AuthStore()
        """Users, roles, permissions and the enabled flag (``Op.AUTH``; see ``auth_store``)."""
        self.audit = AuditLog()
        """The audit trail: a record per applied mutation and per platform event."""
        self._auditing: InternalRequest | None = None
        """The KV write being applied (its record is appended by the commit hook)."""
        self._applied_index = 0
        self._revision_listeners: list[RevisionListener] = []
        self._restore_listeners: list[Callable[[], None]] = []
        self._lease_listeners: list[LeaseListener] = []
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

    def on_lease(self, listener: LeaseListener) -> Callable[[], None]:
        """Call ``listener(op, ids)`` after every applied grant, revoke or checkpoint (the lessor)."""
        self._lease_listeners.append(listener)
        return lambda: self._lease_listeners.remove(listener)

    def _lease_changed(self, op: Op, ids: tuple[int, ...]) -> None:
        for listener in list(self._lease_listeners):
            listener(op, ids)

    def _on_revision(self, revision: int, events: tuple[Event, ...]) -> None:
        req = self._auditing
        if req is not None:
            self.audit.append(
                revision, req.time_ms, req.principal, req.actor, req.reason, req.source,
                action_of(req), events,
            )
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
        if op == Op.AUTH:
            result = self.auth.apply(req.principal, req.body)
            action, detail = describe_auth(req.body)  # applied (a refusal raised): record it
            self.audit.append(
                self.kv.revision, req.time_ms, req.principal, req.actor, req.reason, req.source,
                action, (), b"", detail,
            )
            return result
        if op == Op.AUDIT_APPEND:
            return self._apply_audit_append(req)
        if op == Op.AUDIT_PURGE:
            return self.audit.purge(audit_pb2.PurgeRequest.FromString(req.body).cutoff_ms)
        # While auth is on, a write its principal may not make is refused here (etcd's authApplierV3).
        check_apply(self.auth, self.kv.leases, req)
        if op in _AUDITED:
            if self.auth.enabled:
                check_audit_metadata(self.auth, req)
            self._auditing = req
            try:
                return self._apply_kv(req)
            finally:
                self._auditing = None
        return self._apply_kv(req)

    def _apply_audit_append(self, req: InternalRequest) -> int:
        """A platform event: a record with no key change (trusted principals only); its id."""
        event = audit_pb2.AppendRequest.FromString(req.body)
        check_append(self.auth, req, event.action)
        return self.audit.append(
            self.kv.revision, req.time_ms, req.principal, req.actor, req.reason, req.source,
            event.action, (), event.key, event.detail,
        )

    def _apply_kv(self, req: InternalRequest) -> object:
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
            if nospace and _txn_puts(txn):
                raise NoSpaceError()  # deletes still pass: they are how space is freed (etcd)
            return self.kv.txn(txn)
        if op == Op.COMPACTION:
            if failpoints.ACTIVE: failpoints.hit("before-compact")  # noqa: E701 - test-only, one line
            creq = pb.CompactionRequest.FromString(req.body)
            self.kv.compact(creq.revision)
            return creq.revision
        if op == Op.LEASE_GRANT:
            if nospace:
                raise NoSpaceError()
            greq = pb.LeaseGrantRequest.FromString(req.body)
            granted = self.kv.lease_grant(greq.ID, greq.TTL)
            self._lease_changed(op, (granted.id,))
            return granted
        if op == Op.LEASE_REVOKE:
            rreq = pb.LeaseRevokeRequest.FromString(req.body)
            revision = self.kv.lease_revoke(rreq.ID)
            self._lease_changed(op, (rreq.ID,))
            return revision
        if op == Op.LEASE_CHECKPOINT:
            # A batch of remaining TTLs (etcd's LeaseCheckpointRequest); a lease
            # revoked meanwhile is skipped, as etcd's lessor does.
            batch = pb.LeaseCheckpointRequest.FromString(req.body)
            done = tuple(cp.ID for cp in batch.checkpoints if cp.ID in self.kv.leases)
            for cp in batch.checkpoints:
                if cp.ID in self.kv.leases:
                    self.kv.lease_checkpoint(cp.ID, cp.remaining_TTL)
            self._lease_changed(op, done)
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
        auth_bytes = self.auth.to_bytes()
        parts.append(_U32.pack(len(auth_bytes)))
        parts.append(auth_bytes)
        audit_bytes = self.audit.to_bytes()
        parts.append(_U64.pack(len(audit_bytes)))
        parts.append(audit_bytes)
        parts.append(kv_bytes)
        body = b"".join(parts)
        return body + _U32.pack(crc32c(body))

    def restore(self, data: bytes, index: int) -> None:
        if data[:4] != _SNAPSHOT_MAGIC or data[4] not in (1, 2, 3, _SNAPSHOT_VERSION):
            raise ValueError("not an etcd state machine snapshot (bad magic or version)")
        if data[4] >= 4:
            if len(data) < 9 or _U32.unpack_from(data, len(data) - 4)[0] != crc32c(data[:-4]):
                raise ValueError("the state machine snapshot fails its checksum")
            data = data[:-4]
        pos = 5
        (n,) = _U32.unpack_from(data, pos)
        pos += 4
        alarms: set[Alarm] = set()
        for _ in range(n):
            member_id, alarm = struct.unpack_from("<QI", data, pos)
            pos += 12
            alarms.add(Alarm(member_id, alarm))
        auth = AuthStore()
        if data[4] >= 2:
            (n,) = _U32.unpack_from(data, pos)
            auth = AuthStore.from_bytes(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
        audit = AuditLog()
        if data[4] >= 3:
            (n,) = _U64.unpack_from(data, pos)
            audit = AuditLog.from_bytes(data[pos + 8 : pos + 8 + n])
            pos += 8 + n
        kv = KVStore.from_bytes(
            data[pos:], max_txn_ops=self.max_txn_ops, min_lease_ttl=self.min_lease_ttl
        )
        self._unsubscribe()
        self.kv = kv
        self._unsubscribe = self.kv.subscribe(self._on_revision)
        self.alarms = alarms
        self.auth = auth
        # In place: audit watchers stay subscribed across a snapshot install.
        self.audit.adopt(audit)
        self._applied_index = index
        for listener in list(self._restore_listeners):
            listener()


def _txn_puts(txn: TxnRequest) -> bool:
    """Whether any op of either branch (nested included) is a put (what NOSPACE refuses, as etcd)."""
    for op in (*txn.success, *txn.failure):
        if isinstance(op, PutRequest):
            return True
        if isinstance(op, TxnRequest) and _txn_puts(op):
            return True
    return False
