"""The backend space quota: etcd's ``--quota-backend-bytes`` and its NOSPACE alarm.

Before a Put, a Txn or a LeaseGrant is proposed, the member that received it
estimates what it would cost (etcd's formula: 256 bytes plus key and value
per put, the larger branch of a txn, 64 bytes per lease) and compares the
key space's size plus that cost with the quota. When it would not fit, the
member raises the NOSPACE alarm through Raft (in its own name) and refuses
the request with etcd's "etcdserver: mvcc: database space exceeded". While
the alarm is raised, the state machine itself refuses every put, every txn
with a put and every lease grant, on every member, until ``etcdctl alarm
disarm`` (after compaction has made room).

The size compared is :func:`db_size`, the key space's own accounting of
every retained version and lease (``KVStore.size_bytes``), which is also what
``Status`` reports as ``dbSize``: there is no file that grows and needs a
defragmentation to shrink, so the size falls as soon as a compaction drops
history.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from google.protobuf.message import Message as PbMessage

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.server import errors
from consensus.server.etcd_state import EtcdStateMachine, NoSpaceError
from consensus.server.internal_request import Op

log = logging.getLogger(__name__)

DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024
"""The quota when ``--quota-backend-bytes`` is 0 (etcd: 2 GiB)."""

MAX_SUGGESTED_QUOTA_BYTES = 8 * 1024 * 1024 * 1024
"""Above this etcd warns that performance may degrade (8 GiB); Flagstaff warns too."""

KV_OVERHEAD = 256
"""etcd's estimate of a key's metadata, charged per put on top of key and value."""

LEASE_OVERHEAD = 64
"""etcd's estimate of a lease, charged per lease grant."""


def effective_quota(configured: int) -> int | None:
    """The quota in bytes for ``--quota-backend-bytes``: 0 is the default, negative disables it."""
    if configured < 0:
        return None
    if configured == 0:
        return DEFAULT_QUOTA_BYTES
    return configured


def db_size(fsm: EtcdStateMachine) -> int:
    """The size the quota and ``Status.dbSize`` speak of: the key space's accounted bytes."""
    return fsm.kv.size_bytes


def _put_cost(put: pb.PutRequest) -> int:
    return KV_OVERHEAD + len(put.key) + len(put.value)


def _branch_cost(ops: list[pb.RequestOp]) -> int:
    total = 0
    for op in ops:
        which = op.WhichOneof("request")
        if which == "request_put":
            total += _put_cost(op.request_put)
        elif which == "request_txn":
            # etcd charges nothing for a nested txn; charging its puts is stricter and safer.
            total += request_cost(Op.TXN, op.request_txn)
    return total


def request_cost(op: Op, request: PbMessage) -> int:
    """What a request is charged against the quota (0 for a request the quota ignores)."""
    if op == Op.PUT and isinstance(request, pb.PutRequest):
        return _put_cost(request)
    if op == Op.TXN and isinstance(request, pb.TxnRequest):
        return max(_branch_cost(list(request.success)), _branch_cost(list(request.failure)))
    if op == Op.LEASE_GRANT:
        return LEASE_OVERHEAD
    return 0


_CHARGED = frozenset({Op.PUT, Op.TXN, Op.LEASE_GRANT})


class Proposer(Protocol):
    """How the quota raises the alarm: ``EtcdServer.propose``."""

    async def propose(self, op: Op, request: PbMessage, context: None = None) -> object: ...


class BackendQuota:
    """The quota check run before every proposal (see the module docstring)."""

    def __init__(
        self, fsm: EtcdStateMachine, proposer: Proposer, member_id: int, quota_bytes: int
    ) -> None:
        self.fsm = fsm
        self.proposer = proposer
        self.member_id = member_id
        self.quota_bytes = quota_bytes

    def available(self, op: Op, request: PbMessage) -> bool:
        """etcd's ``Available``: whether size plus cost stays strictly below the quota."""
        return db_size(self.fsm) + request_cost(op, request) < self.quota_bytes

    async def check(self, op: Op, request: PbMessage) -> None:
        """Refuse (raising ``NoSpaceError``) a request that would exceed the quota, raising the alarm."""
        if op not in _CHARGED or self.available(op, request):
            return
        raised = any(
            a.member_id == self.member_id and a.alarm == pb.NOSPACE for a in self.fsm.alarms
        )
        if not raised:
            log.warning(
                "database space exceeded (%d bytes used, quota %d): raising the NOSPACE alarm",
                db_size(self.fsm), self.quota_bytes,
            )
            alarm = pb.AlarmRequest(
                action=pb.AlarmRequest.ACTIVATE, memberID=self.member_id, alarm=pb.NOSPACE
            )
            try:
                await self.proposer.propose(Op.ALARM, alarm)
            except errors.MemberError as exc:
                # etcd ignores the outcome too: the request is refused either way,
                # and the next refused request tries again.
                log.warning("could not raise the NOSPACE alarm: %s", exc)
        raise NoSpaceError()


class _QuotaServer(Proposer, Protocol):
    """The parts of ``EtcdServer`` the quota plugs into."""

    fsm: EtcdStateMachine
    propose_checks: list[Callable[[Op, PbMessage], Awaitable[None]]]


def install(server: _QuotaServer, member_id: int, configured: int) -> BackendQuota | None:
    """Check every proposal of ``server`` against ``--quota-backend-bytes`` (None: disabled)."""
    quota_bytes = effective_quota(configured)
    if quota_bytes is None:
        log.info("backend quota disabled (--quota-backend-bytes %d)", configured)
        return None
    if quota_bytes > MAX_SUGGESTED_QUOTA_BYTES:
        log.warning(
            "--quota-backend-bytes %d exceeds the suggested maximum %d",
            quota_bytes, MAX_SUGGESTED_QUOTA_BYTES,
        )
    quota = BackendQuota(server.fsm, server, member_id, quota_bytes)
    server.propose_checks.append(quota.check)
    return quota
