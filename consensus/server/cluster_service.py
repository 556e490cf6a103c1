"""The etcd ``Cluster`` service (MemberList/Add/Remove/Update/Promote) and the publish of a member.

Membership changes are Raft conf changes proposed through the member
(:meth:`Member.add_member` and friends); name, client URLs and MemberUpdate's
peer URLs are replicated attribute updates (:meth:`Member.update_member_attributes`).
Like etcd with its default ``--strict-reconfig-check``, a change that could
cost the cluster its quorum is refused before it is proposed:

* adding a voter needs a quorum of the future voters started (a started
  member has a name: it published, or came from ``--initial-cluster``) and
  this member connected to every voter ("etcdserver: unhealthy cluster");
* removing a voter needs a quorum of the remaining voters started, and (if
  the voter is reachable) enough connected voters left;
* promoting a learner needs it in sync with the leader (90% of its log), so
  a member that does not lead forwards the request to the leader's client
  URLs, as etcd forwards it over its peer API; at most one learner exists.

:func:`publish` is etcd's publish: once a member runs, it replicates its
``--name`` and ``--advertise-client-urls``, so every member's client URLs
appear in MemberList (``etcdctl endpoint status --cluster`` dials them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol
from urllib.parse import urlsplit

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc as pb_grpc
from consensus.server import errors
from consensus.server.auth_tokens import token_of
from consensus.server.authorization import Need, authorize
from consensus.server.cluster import parse_url
from consensus.server.etcd_server import EtcdError, EtcdServer, unary
from consensus.server.membership import MemberInfo
from consensus.server.proposal import MemberAttributes

log = logging.getLogger(__name__)

MAX_LEARNERS = 1
"""etcd 3.4 allows one learner at a time."""

PUBLISH_RETRY_SECONDS = 0.5
"""Pause between two attempts to publish this member's attributes."""

class _ClusterError(EtcdError):
    """One of etcd's gRPC errors for membership changes (api/v3rpc/rpctypes): fixed code and text."""

    code_: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    text = ""

    def __init__(self) -> None:
        super().__init__(self.code_, self.text)


class MemberExistError(_ClusterError):
    code_, text = grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: member ID already exist"


class PeerURLExistError(_ClusterError):
    code_, text = grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists"


class NotEnoughStartedError(_ClusterError):
    code_ = grpc.StatusCode.FAILED_PRECONDITION
    text = "etcdserver: re-configuration failed due to not enough started members"


class BadURLsError(_ClusterError):
    code_, text = grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid"


class MemberNotFoundError(_ClusterError):
    code_, text = grpc.StatusCode.NOT_FOUND, "etcdserver: member not found"


class MemberNotLearnerError(_ClusterError):
    code_, text = grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: can only promote a learner member"


class LearnerNotReadyError(_ClusterError):
    code_ = grpc.StatusCode.FAILED_PRECONDITION
    text = "etcdserver: can only promote a learner member which is in sync with leader"


class TooManyLearnersError(_ClusterError):
    code_, text = grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster"


class UnhealthyError(_ClusterError):
    code_, text = grpc.StatusCode.UNAVAILABLE, "etcdserver: unhealthy cluster"


class NotLeaderError(_ClusterError):
    code_, text = grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader"


class NotSupportedForLearnerError(_ClusterError):
    code_, text = grpc.StatusCode.UNAVAILABLE, "etcdserver: rpc not supported for learner"


_MEMBER_ERRORS: dict[type[errors.MemberError], type[_ClusterError]] = {
    errors.MemberIdExistsError: MemberExistError,
    errors.MemberIdNotFoundError: MemberNotFoundError,
    errors.MemberIdRemovedError: MemberNotFoundError,
    errors.PeerUrlExistsError: PeerURLExistError,
    errors.MemberNotLearnerError: MemberNotLearnerError,
    errors.LearnerNotReadyError: LearnerNotReadyError,
    errors.NotLeaderError: NotLeaderError,
    errors.UnhealthyClusterError: UnhealthyError,
}


def membership_error(exc: errors.MemberError) -> BaseException:
    """The error etcd's Cluster API answers for ``exc`` (its own text when etcd's is the same)."""
    mapped = _MEMBER_ERRORS.get(type(exc))
    return mapped() if mapped is not None else exc


class ClusterMemberPort(Protocol):
    """What the Cluster service needs of the member (``consensus.server.member.Member``)."""

    @property
    def id(self) -> int: ...

    @property
    def leader(self) -> int: ...

    @property
    def is_leader(self) -> bool: ...

    def members(self) -> list[MemberInfo]: ...

    def peer_connected(self, member_id_: int) -> bool: ...

    async def add_member(
        self,
        peer_urls: list[str],
        *,
        name: str = "",
        is_learner: bool = False,
        timeout: float | None = None,
    ) -> MemberInfo: ...

    async def remove_member(self, member_id_: int, timeout: float | None = None) -> None: ...

    async def promote_member(self, member_id_: int, timeout: float | None = None) -> MemberInfo: ...

    async def update_member_attributes(
        self, attributes: MemberAttributes, timeout: float | None = None
    ) -> MemberInfo: ...

    async def wait_for_leader(self, timeout: float) -> bool: ...


def member_to_pb(info: MemberInfo) -> pb.Member:
    """``etcdserverpb.Member`` for one entry of the membership table."""
    return pb.Member(
        ID=info.id,
        name=info.name,
        peerURLs=list(info.peer_urls),
        clientURLs=list(info.client_urls),
        isLearner=info.is_learner,
    )


def is_learner(member: ClusterMemberPort) -> bool:
    """Whether ``member`` is a learner now (per its own membership table)."""
    return any(m.id == member.id and m.is_learner for m in member.members())


def grpc_target(url: str) -> str:
    """``host:port`` to dial for a client URL (``http://host:port`` or a bare ``host:port``)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or 2379}"


def _valid_peer_urls(urls: list[str]) -> list[str]:
    if not urls:
        raise BadURLsError()
    try:
        for url in urls:
            parse_url(url)
    except ValueError:
        raise BadURLsError() from None
    return list(urls)


class ClusterService(pb_grpc.ClusterServicer):
    """etcdserverpb.Cluster on top of one member."""

    def __init__(self, server: EtcdServer, member: ClusterMemberPort, request_timeout: float) -> None:
        self.s = server
        self.member = member
        self.request_timeout = request_timeout

    def _header(self) -> pb.ResponseHeader:
        # etcd's Cluster responses carry no revision.
        return self.s.header(revision=0)

    def _members(self) -> list[pb.Member]:
        return [member_to_pb(m) for m in self.member.members()]

    def _refuse_on_learner(self) -> None:
        if is_learner(self.member):
            raise NotSupportedForLearnerError()

    # -- strict reconfiguration checks (etcd's mayAddMember / mayRemoveMember / mayPromoteMember) --
    def _voters(self) -> list[MemberInfo]:
        return [m for m in self.member.members() if not m.is_learner]

    def _check_add(self, urls: list[str], is_learner_: bool) -> None:
        voters = self._voters()
        if not is_learner_:
            started = sum(1 for m in voters if m.name)
            future = len(voters) + 1
            if not (started == 1 and future == 2) and started < future // 2 + 1:
                raise NotEnoughStartedError()
        if not all(self.member.peer_connected(m.id) for m in voters):
            raise UnhealthyError()
        # etcd validates in this order when the change applies: id, peer URLs, learner count.
        # (Ids derive from the sorted peer URLs, so "same URLs" is "same id".)
        members = self.member.members()
        if any(sorted(m.peer_urls) == sorted(urls) for m in members):
            raise MemberExistError()
        if any(set(m.peer_urls) & set(urls) for m in members):
            raise PeerURLExistError()
        if is_learner_ and sum(1 for m in members if m.is_learner) >= MAX_LEARNERS:
            raise TooManyLearnersError()

    def _check_remove(self, target: int) -> None:
        known = {m.id: m for m in self.member.members()}
        info = known.get(target)
        if info is None or info.is_learner:
            return  # a learner never counts for quorum; an unknown id fails when proposed
        voters = self._voters()
        remaining = [m for m in voters if m.id != target]
        started = sum(1 for m in remaining if m.name)
        if started < len(remaining) // 2 + 1:
            raise NotEnoughStartedError()
        if target != self.member.id and not self.member.peer_connected(target):
            return  # a member that is down is not part of the active quorum
        active = sum(1 for m in voters if self.member.peer_connected(m.id))
        if active - 1 < 1 + (len(voters) - 1) // 2:
            raise UnhealthyError()

    def _check_promote(self) -> None:
        voters = self._voters()
        started = 1 + sum(1 for m in voters if m.name)
        if started < (len(voters) + 1) // 2 + 1:
            raise NotEnoughStartedError()

    # -- RPCs ---------------------------------------------------------------------------------
    @unary
    async def MemberList(
        self, request: pb.MemberListRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberListResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ANY)
        if request.linearizable:
            await self.s.linearizable_barrier()
        return pb.MemberListResponse(header=self._header(), members=self._members())

    @unary
    async def MemberAdd(
        self, request: pb.MemberAddRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberAddResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ADMIN)
        urls = _valid_peer_urls(list(request.peerURLs))
        self._check_add(urls, request.isLearner)
        try:
            added = await self.member.add_member(urls, is_learner=request.isLearner)
        except errors.MemberError as exc:
            raise membership_error(exc) from None
        return pb.MemberAddResponse(
            header=self._header(),
            member=pb.Member(ID=added.id, peerURLs=list(urls), isLearner=request.isLearner),
            members=self._members(),
        )

    @unary
    async def MemberRemove(
        self, request: pb.MemberRemoveRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberRemoveResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ADMIN)
        self._check_remove(request.ID)
        try:
            await self.member.remove_member(request.ID)
        except errors.MemberError as exc:
            raise membership_error(exc) from None
        return pb.MemberRemoveResponse(header=self._header(), members=self._members())

    @unary
    async def MemberUpdate(
        self, request: pb.MemberUpdateRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberUpdateResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ADMIN)
        urls = _valid_peer_urls(list(request.peerURLs))
        try:
            await self.member.update_member_attributes(MemberAttributes(request.ID, peer_urls=urls))
        except errors.MemberError as exc:
            raise membership_error(exc) from None
        return pb.MemberUpdateResponse(header=self._header(), members=self._members())

    @unary
    async def MemberPromote(
        self, request: pb.MemberPromoteRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberPromoteResponse:
        self._refuse_on_learner()
        authorize(self.s, context, Need.ADMIN)
        if not self.member.is_leader:
            token = token_of(context)
            return await self._forward_promote(request, [] if token is None else [("token", token)])
        return await self._promote_here(request)

    async def _promote_here(self, request: pb.MemberPromoteRequest) -> pb.MemberPromoteResponse:
        known = {m.id: m for m in self.member.members()}
        if request.ID in known and known[request.ID].is_learner:
            self._check_promote()
        try:
            await self.member.promote_member(request.ID)
        except errors.MemberError as exc:
            raise membership_error(exc) from None
        return pb.MemberPromoteResponse(header=self._header(), members=self._members())

    async def _forward_promote(
        self, request: pb.MemberPromoteRequest, metadata: list[tuple[str, str]]
    ) -> pb.MemberPromoteResponse:
        """Only the leader knows whether a learner is in sync: ask it, until the request times out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        final = {MemberNotFoundError.text, MemberNotLearnerError.text, LearnerNotReadyError.text}
        while loop.time() < deadline:
            if self.member.is_leader:
                return await self._promote_here(request)
            leader = next((m for m in self.member.members() if m.id == self.member.leader), None)
            for url in leader.client_urls if leader is not None else []:
                remaining = max(0.1, deadline - loop.time())
                async with self.s.dial(url) as channel:
                    promote = channel.unary_unary(
                        "/etcdserverpb.Cluster/MemberPromote",
                        request_serializer=pb.MemberPromoteRequest.SerializeToString,
                        response_deserializer=pb.MemberPromoteResponse.FromString,
                    )
                    try:
                        response: pb.MemberPromoteResponse = await promote(
                            request, timeout=remaining, metadata=metadata
                        )
                    except grpc.aio.AioRpcError as exc:
                        if exc.details() in final:
                            raise EtcdError(exc.code(), exc.details() or "") from None
                        log.debug("forwarding MemberPromote to %s failed: %s", url, exc.details())
                        continue
                response.header.CopyFrom(self._header())
                return response
            await asyncio.sleep(0.1)
        raise errors.RequestTimeoutError()


async def publish(
    member: ClusterMemberPort, name: str, client_urls: list[str], timeout: float
) -> None:
    """Replicate this member's name and client URLs (etcd's publish); retries until it succeeds.

    Returns once published, or when the member stops. Run in the background
    from start-up: a member that joins an existing cluster can only publish
    after it has caught up to the conf change that added it.
    """
    while True:
        try:
            if await member.wait_for_leader(timeout):
                await member.update_member_attributes(
                    MemberAttributes(member.id, name=name, client_urls=list(client_urls)),
                    timeout=timeout,
                )
                log.info("published name %r and client URLs %s to the cluster", name, client_urls)
                return
        except errors.StoppedError:
            return
        except errors.MemberError as exc:
            log.debug("publishing this member's attributes failed (will retry): %s", exc)
        await asyncio.sleep(PUBLISH_RETRY_SECONDS)


def register(server: EtcdServer, member: ClusterMemberPort, request_timeout: float) -> ClusterService:
    """Serve ``etcdserverpb.Cluster`` for ``member`` on ``server``."""
    service = ClusterService(server, member, request_timeout)
    server.add_service(pb_grpc.add_ClusterServicer_to_server, service)
    return service
