"""The etcd ``Maintenance`` service: Alarm, Status, Defragment, Hash, HashKV, Snapshot, MoveLeader.

* ``Status`` is this member's view: etcd's version string, the key space's
  size (``dbSize`` = ``dbSizeInUse``, see :mod:`consensus.server.quota`),
  leader, commit index (``raftIndex``), applied index, term, learner flag,
  and ``errors`` ("etcdserver: no leader" and one entry per raised alarm,
  in etcd's text form).
* ``Alarm`` goes through Raft (GET too, so every member answers the same list).
* ``Defragment`` has nothing to do: the key space lives in memory and a
  compaction frees its history at once, so it succeeds without work.
* ``Hash`` is a CRC-32C of the whole replicated state (keys, history,
  leases, alarms, auth); ``HashKV`` is etcd's bit-compatible HashKV.
* ``Snapshot`` streams a backup (:mod:`consensus.server.backup`) of the state
  at one applied index, in 32 KiB chunks, then its sha256, as etcd does.
* ``MoveLeader`` runs on the leader only and returns once the target leads.

As in etcd 3.4, a learner serves ``Status`` only ("etcdserver: rpc not
supported for learner" otherwise). With auth enabled, Defragment, Snapshot,
Hash, HashKV and MoveLeader need the root role and answer refusals as etcd's
Maintenance service does (code Unknown, the auth store's raw text); alarm
changes need root too (see :mod:`consensus.server.authorization`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc as pb_grpc
from consensus.server import backup, errors
from consensus.server.authorization import Need, authorize
from consensus.server.cluster_service import NotLeaderError, NotSupportedForLearnerError
from consensus.server.etcd_server import EtcdError, EtcdServer, status_of, unary
from consensus.server.etcd_state import Alarm
from consensus.server.internal_request import Op
from consensus.server.membership import MemberInfo
from consensus.server.quota import db_size

log = logging.getLogger(__name__)

SERVER_VERSION = "3.4.23"
"""The etcd release whose API Flagstaff serves (``Status.version``; etcdctl prints it)."""

NO_LEADER_TEXT = "etcdserver: no leader"


class BadLeaderTransfereeError(EtcdError):
    """MoveLeader's target is not a voting member."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: bad leader transferee")


class MaintenanceMemberPort(Protocol):
    """What the Maintenance service needs of the member (``consensus.server.member.Member``)."""

    @property
    def id(self) -> int: ...

    @property
    def leader(self) -> int: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def term(self) -> int: ...

    @property
    def commit(self) -> int: ...

    @property
    def applied(self) -> int: ...

    @property
    def name(self) -> str: ...

    def members(self) -> list[MemberInfo]: ...

    async def transfer_leadership(self, to: int, timeout: float | None = None) -> None: ...


def alarm_text(alarm: Alarm) -> str:
    """An alarm as etcd prints it in ``Status.errors`` (protobuf text form, trailing space)."""
    parts = []
    if alarm.member_id:
        parts.append(f"memberID:{alarm.member_id}")
    if alarm.alarm:
        parts.append(f"alarm:{pb.AlarmType.Name(alarm.alarm)}")
    return "".join(p + " " for p in parts)


class MaintenanceService(pb_grpc.MaintenanceServicer):
    """etcdserverpb.Maintenance on top of one member."""

    def __init__(self, server: EtcdServer, member: MaintenanceMemberPort) -> None:
        self.s = server
        self.member = member

    def _is_learner(self) -> bool:
        return any(m.id == self.member.id and m.is_learner for m in self.member.members())

    def _refuse_on_learner(self) -> None:
        if self._is_learner():
            raise NotSupportedForLearnerError()

    @unary
    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        authorize(self.s, context, Need.ANY)
        size = db_size(self.s.fsm)
        out = pb.StatusResponse(
            header=self.s.header(),
            version=SERVER_VERSION,
            dbSize=size,
            dbSizeInUse=size,
            leader=self.member.leader,
            raftIndex=self.member.commit,
            raftTerm=self.member.term,
            raftAppliedIndex=self.member.applied,
            isLearner=self._is_learner(),
        )
        if self.member.leader == 0:
            out.errors.append(NO_LEADER_TEXT)
        for alarm in sorted(self.s.fsm.alarms, key=lambda a: (a.member_id, a.alarm)):
            out.errors.append(alarm_text(alarm))
        return out

    @unary
    async def Alarm(self, request: pb.AlarmRequest, context: grpc.aio.ServicerContext) -> pb.AlarmResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ANY if request.action == pb.AlarmRequest.GET else Need.ADMIN)
        self.s.check_has_leader(context)
        result = await self.s.propose(Op.ALARM, request, context)
        assert isinstance(result, list)
        alarms: list[Alarm] = result
        if request.action == pb.AlarmRequest.GET and request.alarm != pb.NONE:
            alarms = [a for a in alarms if a.alarm == request.alarm]
        return pb.AlarmResponse(
            header=self.s.header(),
            alarms=[
                pb.AlarmMember(memberID=a.member_id, alarm=pb.AlarmType.Name(a.alarm))
                for a in alarms
            ],
        )

    @unary
    async def Defragment(
        self, request: pb.DefragmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DefragmentResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ADMIN, maintenance=True)
        log.info("defragment: nothing to do, the key space is in memory and compaction frees it")
        return pb.DefragmentResponse(header=self.s.header())

    @unary
    async def Hash(self, request: pb.HashRequest, context: grpc.aio.ServicerContext) -> pb.HashResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ADMIN, maintenance=True)
        fsm = self.s.fsm
        return pb.HashResponse(
            header=self.s.header(fsm.kv.revision), hash=backup.state_hash(fsm.snapshot())
        )

    @unary
    async def HashKV(self, request: pb.HashKVRequest, context: grpc.aio.ServicerContext) -> pb.HashKVResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ADMIN, maintenance=True)
        kv = self.s.fsm.kv
        result = kv.hash_kv(request.revision)
        return pb.HashKVResponse(
            header=self.s.header(kv.revision),
            hash=result.hash,
            compact_revision=result.compact_revision,
            hash_revision=result.hash_revision,
        )

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SnapshotResponse]:
        try:
            self._refuse_on_learner()
            authorize(self.s, context, Need.ADMIN, maintenance=True)
        except Exception as exc:
            status = status_of(exc)
            if status is None:
                raise
            await context.abort(status[0], status[1])
        fsm = self.s.fsm
        # One synchronous step: the state and its position are taken at the same applied index.
        state = fsm.snapshot()
        meta = backup.BackupMeta(
            revision=fsm.kv.revision,
            compact_revision=fsm.kv.compact_revision,
            applied_index=fsm.applied_index,
            raft_term=self.member.term,
            cluster_id=self.s.header().cluster_id,
            member_id=self.member.id,
            member_name=self.member.name,
            server_version=SERVER_VERSION,
        )
        header = self.s.header(meta.revision)
        body = memoryview(backup.encode_body(meta, state))
        del state
        log.info(
            "sending a snapshot at applied index %d, revision %d (%d bytes)",
            meta.applied_index, meta.revision, len(body),
        )
        digest = hashlib.sha256()
        sent = 0
        while sent < len(body):
            chunk = body[sent : sent + backup.CHUNK_BYTES]
            sent += len(chunk)
            digest.update(chunk)
            out = pb.SnapshotResponse(
                remaining_bytes=len(body) - sent, blob=bytes(chunk), version=SERVER_VERSION
            )
            if sent == len(chunk):
                out.header.CopyFrom(header)  # the first message says which point in time
            yield out
        yield pb.SnapshotResponse(remaining_bytes=0, blob=digest.digest(), version=SERVER_VERSION)

    @unary
    async def MoveLeader(
        self, request: pb.MoveLeaderRequest, context: grpc.aio.ServicerContext
    ) -> pb.MoveLeaderResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ADMIN, maintenance=True)
        if not self.member.is_leader:
            raise NotLeaderError()
        target = next((m for m in self.member.members() if m.id == request.targetID), None)
        if target is None or target.is_learner:
            raise BadLeaderTransfereeError()
        try:
            await self.member.transfer_leadership(request.targetID)
        except errors.LeadershipTransferTimeoutError as exc:
            # etcd does not map this one: it reaches the client as Unknown with etcd's text.
            raise EtcdError(grpc.StatusCode.UNKNOWN, str(exc)) from None
        except errors.NotLeaderError:
            raise NotLeaderError() from None
        except errors.MemberIdNotFoundError:
            raise BadLeaderTransfereeError() from None
        return pb.MoveLeaderResponse(header=self.s.header())


def register(server: EtcdServer, member: MaintenanceMemberPort) -> MaintenanceService:
    """Serve ``etcdserverpb.Maintenance`` for ``member`` on ``server``."""
    service = MaintenanceService(server, member)
    server.add_service(pb_grpc.add_MaintenanceServicer_to_server, service)
    return service
