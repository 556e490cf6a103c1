"""The etcd ``Lease`` service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases.

Grants and revokes go through Raft. A grant without an ID gets a random
positive int64 chosen here, before proposing, so apply stays deterministic.

Keep-alives and TimeToLive are answered by the leader's :class:`Lessor`, the
only clock that decides expiry. A follower forwards them to the leader over
gRPC, to the client URL the leader published in the membership table, with
the ``flagstaff-lease-forwarded`` metadata; a forwarded request that reaches
a member which is not the leader is refused with ``etcdserver: not leader``
and the forwarding member retries (etcd forwards over its peer URLs to the
same effect). A leader that has not yet caught up after its election (its
lessor is not promoted) holds the request until it has.

etcd's answers are kept: a keep-alive of an unknown lease answers TTL 0, a
TimeToLive of an unknown lease answers TTL -1, and the response headers are
this member's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc as pb_grpc
from consensus.mvcc import LeaseNotFoundError, MVCCError
from consensus.mvcc.lease import LeaseInfo
from consensus.server import errors
from consensus.server.auth_tokens import token_of
from consensus.server.authorization import Need, authorize, authorize_lease_revoke
from consensus.server.etcd_server import (
    NOT_SUPPORTED_FOR_LEARNER,
    EtcdError,
    EtcdServer,
    status_of,
    unary,
)
from consensus.server.internal_request import Op
from consensus.server.lessor import Lessor, NotPrimaryError

log = logging.getLogger(__name__)

FORWARDED_METADATA = "flagstaff-lease-forwarded"
"""Metadata key marking a request a follower forwarded to the leader (never forwarded again)."""

RETRY_SECONDS = 0.05
"""Pause between two attempts to reach the leader (etcd's throttle)."""

_T = TypeVar("_T")

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,  # leader gone, no leader, connection refused
        grpc.StatusCode.FAILED_PRECONDITION,  # "etcdserver: not leader" (it changed meanwhile)
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
"""Answers from the would-be leader that mean "try again"; any other is the caller's answer."""


def new_lease_id() -> int:
    """A fresh random positive int64 lease id (never 0, which means "no lease")."""
    while True:
        lease_id = secrets.randbits(63)
        if lease_id:
            return lease_id


def grpc_target(url: str) -> str | None:
    """``host:port`` for an ``http``/``https`` client URL; None for anything gRPC cannot dial."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 2379}"


def _insecure(url: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(grpc_target(url))


class LeaderForwarder:
    """gRPC channels from a follower to the leader's client URLs, reused across requests.

    ``dial`` opens a channel for a URL (``EtcdServer.dial``: TLS for ``https://``).
    """

    def __init__(self, dial: Callable[[str], grpc.aio.Channel] = _insecure) -> None:
        self._dial = dial
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stubs(self, client_urls: list[str]) -> list[pb_grpc.LeaseStub]:
        out = []
        for url in client_urls:
            if grpc_target(url) is None:
                continue
            channel = self._channels.get(url)
            if channel is None:
                channel = self._dial(url)
                self._channels[url] = channel
            out.append(pb_grpc.LeaseStub(channel))  # type: ignore[no-untyped-call]
        return out

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


Metadata = tuple[tuple[str, str], ...]


def forward_metadata(context: grpc.aio.ServicerContext) -> Metadata:
    """The forwarded marker plus the caller's auth token: the leader checks the caller again
    (the marker alone must never be a way around auth)."""
    token = token_of(context)
    return ((FORWARDED_METADATA, "1"),) + ((("token", token),) if token else ())


async def _forwarded_renew(
    stub: pb_grpc.LeaseStub, lease_id: int, timeout: float, metadata: Metadata
) -> int:
    """One keep-alive through the leader's own LeaseKeepAlive stream; the TTL it answered."""
    call = stub.LeaseKeepAlive(metadata=metadata, timeout=timeout)
    try:
        await call.write(pb.LeaseKeepAliveRequest(ID=lease_id))
        resp = await call.read()
        if resp is grpc.aio.EOF:
            await call  # raises the stream's error status
            raise errors.ProposalDroppedError("etcdserver: leader closed the keep-alive stream")
        await call.done_writing()
        return int(resp.TTL)
    finally:
        call.cancel()


class LeaseService(pb_grpc.LeaseServicer):
    """etcdserverpb.Lease on top of one member and its lessor."""

    def __init__(self, server: EtcdServer, lessor: Lessor) -> None:
        self.s = server
        self.lessor = lessor
        self.member = lessor.member
        self.forwarder = LeaderForwarder(server.dial)

    # -- Raft-backed calls ---------------------------------------------------------------------
    @unary
    async def LeaseGrant(
        self, request: pb.LeaseGrantRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseGrantResponse:
        self.s.check_has_leader(context)
        authorize(self.s, context, Need.USER)
        req = pb.LeaseGrantRequest(TTL=request.TTL, ID=request.ID)
        # No id requested: choose one here, before proposing, so every member applies
        # the same. (A requested id that is taken is the client's LeaseExistsError.)
        while req.ID == 0 or (request.ID == 0 and req.ID in self.s.fsm.kv.leases):
            req.ID = new_lease_id()
        granted = await self.s.propose(Op.LEASE_GRANT, req, context)
        assert isinstance(granted, LeaseInfo)
        return pb.LeaseGrantResponse(header=self.s.header(), ID=granted.id, TTL=granted.ttl)

    @unary
    async def LeaseRevoke(
        self, request: pb.LeaseRevokeRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseRevokeResponse:
        self.s.check_has_leader(context)
        authorize_lease_revoke(self.s, context, request.ID)  # apply checks again
        revision = await self.s.propose(Op.LEASE_REVOKE, request, context)
        assert isinstance(revision, int)
        return pb.LeaseRevokeResponse(header=self.s.header(revision))

    # -- leader-served calls ---------------------------------------------------------------------
    async def LeaseKeepAlive(
        self,
        request_iterator: AsyncIterator[pb.LeaseKeepAliveRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        forwarded = _is_forwarded(context)
        metadata = forward_metadata(context)
        try:
            if self.s.member.is_learner:
                raise EtcdError(grpc.StatusCode.UNAVAILABLE, NOT_SUPPORTED_FOR_LEARNER)
            self.s.check_has_leader(context)
            authorize(self.s, context, Need.USER)
            async for req in request_iterator:
                # The header is taken before renewing (as etcd): its revision is
                # never past a revoke the client could otherwise miss.
                resp = pb.LeaseKeepAliveResponse(ID=req.ID, header=self.s.header())
                try:
                    resp.TTL = await self._renew(req.ID, forwarded, metadata)
                except LeaseNotFoundError:
                    resp.TTL = 0
                yield resp
        except (EtcdError, MVCCError, errors.MemberError) as exc:
            status = status_of(exc)
            assert status is not None
            await context.abort(status[0], status[1])

    @unary
    async def LeaseTimeToLive(
        self, request: pb.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseTimeToLiveResponse:
        self.s.check_has_leader(context)
        authorize(self.s, context, Need.USER)
        try:
            resp = await self._time_to_live(
                request, _is_forwarded(context), forward_metadata(context)
            )
        except LeaseNotFoundError:
            resp = pb.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        resp.header.CopyFrom(self.s.header())
        return resp

    @unary
    async def LeaseLeases(
        self, request: pb.LeaseLeasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseLeasesResponse:
        self.s.check_has_leader(context)
        authorize(self.s, context, Need.USER)
        leases = [pb.LeaseStatus(ID=i) for i in self.lessor.leases_by_expiry()]
        return pb.LeaseLeasesResponse(header=self.s.header(), leases=leases)

    # -- serving on the leader, or forwarding to it ----------------------------------------------------
    async def _renew(self, lease_id: int, forwarded: bool, metadata: Metadata) -> int:
        async def local() -> int:
            return await self.lessor.renew(lease_id)

        async def remote(stub: pb_grpc.LeaseStub, timeout: float) -> int:
            return await _forwarded_renew(stub, lease_id, timeout, metadata)

        return await self._on_leader(local, remote, forwarded)

    async def _time_to_live(
        self, request: pb.LeaseTimeToLiveRequest, forwarded: bool, metadata: Metadata
    ) -> pb.LeaseTimeToLiveResponse:
        async def local() -> pb.LeaseTimeToLiveResponse:
            info = self.lessor.time_to_live(request.ID, keys=request.keys)
            return pb.LeaseTimeToLiveResponse(
                ID=info.id, TTL=info.ttl, grantedTTL=info.granted_ttl, keys=list(info.keys)
            )

        async def remote(stub: pb_grpc.LeaseStub, timeout: float) -> pb.LeaseTimeToLiveResponse:
            resp: pb.LeaseTimeToLiveResponse = await stub.LeaseTimeToLive(
                request, metadata=metadata, timeout=timeout
            )
            if resp.TTL == -1:
                raise LeaseNotFoundError()
            return resp

        return await self._on_leader(local, remote, forwarded)

    async def _on_leader(
        self,
        local: Callable[[], Awaitable[_T]],
        remote: Callable[[pb_grpc.LeaseStub, float], Awaitable[_T]],
        forwarded: bool,
    ) -> _T:
        """Run ``local`` if this member's lessor is primary, else ``remote`` against the leader.

        Retries (leader changes, a leader still catching up, connection
        failures) until the request timeout. ``LeaseNotFoundError`` ends it.
        """
        loop = asyncio.get_running_loop()
        timeout = self.lessor.config.request_timeout
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                if self.member.leader == 0:
                    raise errors.NoLeaderError()
                raise errors.RequestTimeoutError()
            if self.lessor.is_primary:
                with contextlib.suppress(NotPrimaryError):
                    return await local()
            elif self.member.is_leader:
                # Elected, not yet caught up with earlier terms: wait for the promotion.
                await self.lessor.wait_primary(min(left, RETRY_SECONDS * 20))
                continue
            elif forwarded:
                raise EtcdError(grpc.StatusCode.FAILED_PRECONDITION, errors.NotLeaderError.message)
            else:
                for stub in self.forwarder.stubs(self._leader_client_urls()):
                    try:
                        return await remote(stub, left)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() == grpc.StatusCode.NOT_FOUND:
                            raise LeaseNotFoundError() from None
                        if exc.code() not in _RETRYABLE:  # e.g. the leader refused the caller's token
                            raise EtcdError(exc.code(), exc.details() or "") from None
                        log.debug("forwarding to the leader failed: %s", exc.details())
                    except (grpc.RpcError, asyncio.InvalidStateError) as exc:
                        log.debug("forwarding to the leader failed: %r", exc)
                    except errors.MemberError as exc:
                        log.debug("forwarding to the leader failed: %s", exc)
            await asyncio.sleep(min(RETRY_SECONDS, max(0.0, deadline - loop.time())))

    def _leader_client_urls(self) -> list[str]:
        leader = self.member.leader
        if leader == 0 or leader == self.member.id:
            return []
        for info in self.member.members():
            if info.id == leader:
                return list(info.client_urls)
        return []


def _is_forwarded(context: grpc.aio.ServicerContext) -> bool:
    return any(key == FORWARDED_METADATA for key, _ in context.invocation_metadata() or ())


def register(server: EtcdServer, lessor: Lessor) -> LeaseService:
    """Serve the Lease API on ``server``; the forwarding channels close when the lessor stops."""
    service = LeaseService(server, lessor)
    server.add_service(pb_grpc.add_LeaseServicer_to_server, service)
    lessor.on_stop(service.forwarder.close)
    return service
