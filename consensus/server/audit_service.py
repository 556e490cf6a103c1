"""The ``flagstaff.audit.v1.Audit`` gRPC service: List, Watch and Append on the audit trail.

Served on every member's client port beside the etcd services (see
``docs/audit.md``):

* ``List`` -- records newest first, filtered (key or range, actor, principal,
  source, action, revision and time ranges), ``limit`` per page and an opaque
  ``page_token`` (the id to continue below). Linearizable unless
  ``serializable``.
* ``Watch`` -- a server stream: the retained records from ``start_revision``
  (or after ``after_id``), then every new one as it is applied, oldest first.
* ``Append`` -- a platform event (login, failed login, permission or token
  change) replicated through Raft; trusted principals only while auth is on.

Reading is permission-checked (:func:`consensus.server.audit_access.visible`).
Records are turned into protobuf messages only here, on the read side.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import grpc

from consensus.api.gen.flagstaff.audit.v1 import audit_pb2 as apb
from consensus.api.gen.flagstaff.audit.v1 import audit_pb2_grpc as apb_grpc
from consensus.mvcc.audit import AuditRecord
from consensus.mvcc.keyrange import FROM_KEY
from consensus.server.audit_access import visible
from consensus.server.auth_tokens import user_of
from consensus.server.etcd_server import EtcdError, EtcdServer, status_of, unary
from consensus.server.internal_request import Op

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
WATCH_BATCH = 256
"""At most this many records per Watch response."""


class RecordFilter:
    """A compiled ``Filter``: whether a record matches (and which of its keys do)."""

    __slots__ = ("end", "f", "start")

    def __init__(self, f: apb.Filter) -> None:
        self.f = f
        self.start = f.key
        self.end: bytes | None
        if not f.key:
            self.end = None
            self.start = b""
        elif not f.range_end:
            self.end = f.key + b"\x00"
        elif f.range_end == FROM_KEY:
            self.end = None
        else:
            self.end = f.range_end

    def _key_matches(self, key: bytes) -> bool:
        return key >= self.start and (self.end is None or key < self.end)

    def matches(self, r: AuditRecord) -> bool:
        f = self.f
        if f.actor and r.actor != f.actor:
            return False
        if f.principal and r.principal != f.principal:
            return False
        if f.source and r.source != f.source:
            return False
        if f.action and r.action != f.action:
            return False
        if r.revision < f.min_revision or (f.max_revision and r.revision > f.max_revision):
            return False
        if r.time_ms < f.since_ms or (f.until_ms and r.time_ms >= f.until_ms):
            return False
        if f.key:
            return any(self._key_matches(k) for k in r.subject_keys())
        return True


def record_to_pb(r: AuditRecord) -> apb.Record:
    """The wire form of one record."""
    out = apb.Record(
        id=r.id, revision=r.revision, time_ms=r.time_ms, principal=r.principal, actor=r.actor,
        reason=r.reason, source=r.source, action=r.action, key=r.key, detail=r.detail,
    )
    for c in r.changes:
        change = out.changes.add(key=c.key, before_mod_revision=c.before_mod_revision,
                                 after_version=c.after_version, lease=c.lease)
        if c.before is not None:
            change.has_before = True
            change.before = c.before
        if c.after is not None:
            change.has_after = True
            change.after = c.after
    return out


class AuditService(apb_grpc.AuditServicer):
    """flagstaff.audit.v1.Audit on top of one member."""

    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    def _visible(
        self, user: str, records: Iterable[AuditRecord], match: RecordFilter
    ) -> Iterable[AuditRecord]:
        store = self.s.fsm.auth
        for record in records:
            if not match.matches(record):
                continue
            shown = visible(store, user, record) if store.enabled else record
            if shown is not None:
                yield shown

    def _header(self) -> apb.ResponseHeader:
        h = self.s.header()
        return apb.ResponseHeader(
            cluster_id=h.cluster_id, member_id=h.member_id, revision=h.revision,
            raft_term=h.raft_term,
        )

    @unary
    async def List(self, request: apb.ListRequest, context: grpc.aio.ServicerContext) -> apb.ListResponse:
        limit = request.limit or DEFAULT_LIMIT
        if limit < 0 or limit > MAX_LIMIT:
            raise EtcdError(grpc.StatusCode.INVALID_ARGUMENT, f"flagstaff: limit must be 1..{MAX_LIMIT}")
        before_id = 0
        if request.page_token:
            try:
                before_id = int(request.page_token)
            except ValueError:
                raise EtcdError(grpc.StatusCode.INVALID_ARGUMENT, "flagstaff: bad page token") from None
        if not request.serializable:
            await self.s.linearizable_barrier()
        user = user_of(self.s.fsm.auth, context)
        out = apb.ListResponse(header=self._header())
        match = RecordFilter(request.filter)
        last = None
        for record in self._visible(user, self.s.fsm.audit.newest_first(before_id), match):
            if len(out.records) == limit:
                out.next_page_token = str(last)
                break
            out.records.append(record_to_pb(record))
            last = record.id
        return out

    async def Watch(
        self, request: apb.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[apb.WatchResponse]:
        fsm = self.s.fsm
        try:
            user = user_of(fsm.auth, context)
        except Exception as exc:
            status = status_of(exc)
            if status is None:
                raise
            await context.abort(status[0], status[1])
            return
        match = RecordFilter(request.filter)
        wake = asyncio.Event()
        # Listeners only say "more": the stream reads the trail itself from its position,
        # so a slow reader holds no queue of records and a snapshot install needs no care.
        unsubscribe = fsm.audit.subscribe(wake.set, wake.set)
        try:
            last_id = request.after_id
            if not last_id and not request.start_revision:
                last_id = fsm.audit.next_id - 1
            # The stream is open: say where it stands before any record arrives.
            yield apb.WatchResponse(header=self._header(), position=last_id)
            while True:
                wake.clear()
                pending = fsm.audit.since(last_id, request.start_revision, WATCH_BATCH)
                if not pending:
                    await wake.wait()
                    continue
                last_id = pending[-1].id
                batch = [record_to_pb(r) for r in self._visible(user, pending, match)]
                if batch:
                    yield apb.WatchResponse(header=self._header(), records=batch, position=last_id)
                elif len(pending) == WATCH_BATCH:
                    # A whole batch filtered out: tell the client how far it got. (Not for
                    # every record: a resume from an older position only re-filters them.)
                    yield apb.WatchResponse(header=self._header(), position=last_id)
        finally:
            unsubscribe()

    @unary
    async def Append(
        self, request: apb.AppendRequest, context: grpc.aio.ServicerContext
    ) -> apb.AppendResponse:
        self.s.check_has_leader(context)
        record_id = await self.s.propose(Op.AUDIT_APPEND, request, context)
        assert isinstance(record_id, int)
        return apb.AppendResponse(header=self._header(), id=record_id)


def register(server: EtcdServer) -> AuditService:
    service = AuditService(server)
    server.add_service(apb_grpc.add_AuditServicer_to_server, service)
    return service
