"""The asyncio etcd v3 client: KV, Watch, Lease, Cluster, Maintenance and Auth calls.

Every call returns the ``etcdserverpb`` response message unchanged (keys and
values are ``bytes``; arguments accept ``str`` too, encoded as UTF-8), except
:meth:`Client.get` (the ``KeyValue`` or None), :meth:`Client.watch` (a
:class:`~consensus.client.watch.Watch`), :meth:`Client.keep_alive` (a
:class:`~consensus.client.lease.KeepAlive`) and :meth:`Client.snapshot` (an
async iterator of bytes).

Every unary call takes ``timeout=`` (seconds; None = the client's default,
``math.inf`` = no deadline). KV and lease calls also take ``metadata=``:
extra gRPC metadata pairs for that call (e.g. the platform's actor/reason).
Failures raise :class:`~consensus.client.errors.EtcdError` subclasses;
which calls are retried on another endpoint is described in
:mod:`consensus.client.transport` — in short, reads are, mutations only when
provably not executed, and an ambiguous mutation raises
:class:`~consensus.client.errors.UncertainResultError`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Literal

import grpc

from consensus.api.gen.etcd.authpb import auth_pb2
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.mvccpb import kv_pb2
from consensus.api.gen.flagstaff.audit.v1 import audit_pb2 as apb
from consensus.client.audit import AUDIT_APPEND, AUDIT_LIST, audit_filter, watch_records
from consensus.client.errors import (
    EtcdError,
    LeaseNotFoundError,
    NoLeaderError,
    error_from_rpc,
    is_transient,
)
from consensus.client.keys import KeyLike, prefix_end, to_bytes
from consensus.client.kv import (
    SortOrder,
    SortTarget,
    delete_request,
    put_request,
    range_request,
    txn_request,
    txn_writes,
)
from consensus.client.lease import KeepAlive, KeepAliveHub
from consensus.client.transport import (
    DEFAULT_CHANNEL_OPTIONS,
    ClientTls,
    Endpoint,
    MetadataPairs,
    Method,
    Transport,
)
from consensus.client.watch import Watch, WatchFilter, WatchHub

PermissionType = Literal["read", "write", "readwrite"]

_KV = "/etcdserverpb.KV/"
_LEASE = "/etcdserverpb.Lease/"
_CLUSTER = "/etcdserverpb.Cluster/"
_MAINT = "/etcdserverpb.Maintenance/"
_AUTH = "/etcdserverpb.Auth/"

RANGE = Method(_KV + "Range", pb.RangeResponse)
PUT = Method(_KV + "Put", pb.PutResponse)
DELETE_RANGE = Method(_KV + "DeleteRange", pb.DeleteRangeResponse)
TXN = Method(_KV + "Txn", pb.TxnResponse)
COMPACT = Method(_KV + "Compact", pb.CompactionResponse)
LEASE_GRANT = Method(_LEASE + "LeaseGrant", pb.LeaseGrantResponse)
LEASE_REVOKE = Method(_LEASE + "LeaseRevoke", pb.LeaseRevokeResponse)
LEASE_TTL = Method(_LEASE + "LeaseTimeToLive", pb.LeaseTimeToLiveResponse)
LEASE_LEASES = Method(_LEASE + "LeaseLeases", pb.LeaseLeasesResponse)
MEMBER_ADD = Method(_CLUSTER + "MemberAdd", pb.MemberAddResponse)
MEMBER_REMOVE = Method(_CLUSTER + "MemberRemove", pb.MemberRemoveResponse)
MEMBER_UPDATE = Method(_CLUSTER + "MemberUpdate", pb.MemberUpdateResponse)
MEMBER_LIST = Method(_CLUSTER + "MemberList", pb.MemberListResponse)
MEMBER_PROMOTE = Method(_CLUSTER + "MemberPromote", pb.MemberPromoteResponse)
ALARM = Method(_MAINT + "Alarm", pb.AlarmResponse)
STATUS = Method(_MAINT + "Status", pb.StatusResponse)
DEFRAGMENT = Method(_MAINT + "Defragment", pb.DefragmentResponse)
HASH_KV = Method(_MAINT + "HashKV", pb.HashKVResponse)
SNAPSHOT = Method(_MAINT + "Snapshot", pb.SnapshotResponse)
MOVE_LEADER = Method(_MAINT + "MoveLeader", pb.MoveLeaderResponse)
AUTH_ENABLE = Method(_AUTH + "AuthEnable", pb.AuthEnableResponse)
AUTH_DISABLE = Method(_AUTH + "AuthDisable", pb.AuthDisableResponse)
AUTH_STATUS = Method(_AUTH + "AuthStatus", pb.AuthStatusResponse)
AUTHENTICATE = Method(_AUTH + "Authenticate", pb.AuthenticateResponse)
USER_ADD = Method(_AUTH + "UserAdd", pb.AuthUserAddResponse)
USER_GET = Method(_AUTH + "UserGet", pb.AuthUserGetResponse)
USER_LIST = Method(_AUTH + "UserList", pb.AuthUserListResponse)
USER_DELETE = Method(_AUTH + "UserDelete", pb.AuthUserDeleteResponse)
USER_CHANGE_PASSWORD = Method(_AUTH + "UserChangePassword", pb.AuthUserChangePasswordResponse)
USER_GRANT_ROLE = Method(_AUTH + "UserGrantRole", pb.AuthUserGrantRoleResponse)
USER_REVOKE_ROLE = Method(_AUTH + "UserRevokeRole", pb.AuthUserRevokeRoleResponse)
ROLE_ADD = Method(_AUTH + "RoleAdd", pb.AuthRoleAddResponse)
ROLE_GET = Method(_AUTH + "RoleGet", pb.AuthRoleGetResponse)
ROLE_LIST = Method(_AUTH + "RoleList", pb.AuthRoleListResponse)
ROLE_DELETE = Method(_AUTH + "RoleDelete", pb.AuthRoleDeleteResponse)
ROLE_GRANT_PERMISSION = Method(
    _AUTH + "RoleGrantPermission", pb.AuthRoleGrantPermissionResponse
)
ROLE_REVOKE_PERMISSION = Method(
    _AUTH + "RoleRevokePermission", pb.AuthRoleRevokePermissionResponse
)

_PERMISSION: dict[str, auth_pb2.Permission.Type] = {
    "read": auth_pb2.Permission.READ,
    "write": auth_pb2.Permission.WRITE,
    "readwrite": auth_pb2.Permission.READWRITE,
}


class Client:
    """An asyncio etcd v3 client over ``grpc.aio`` for a list of member endpoints.

    ``endpoints``: ``"host:port"``, ``"http://host:port"`` or
    ``"https://host:port"`` (TLS with the system roots, or with ``ca_file``).
    ``ca_file``/``cert_file``/``key_file``: TLS as etcdctl's ``--cacert``,
    ``--cert``, ``--key`` (with any of them, ``host:port`` endpoints use TLS
    too; ``http://`` ones stay plaintext). ``timeout``: the
    default per-call deadline in seconds (None: no deadline). ``username`` and
    ``password``: authenticate on first use and send the token; re-authenticate
    once when the server calls it invalid. ``metadata``: gRPC metadata pairs
    sent with every call. Use as ``async with Client([...]) as client:`` or
    call :meth:`close`. Channels open lazily, so constructing needs no loop.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float | None = 5.0,
        username: str | None = None,
        password: str | None = None,
        metadata: MetadataPairs = (),
        channel_options: Sequence[tuple[str, Any]] = DEFAULT_CHANNEL_OPTIONS,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        tls = (
            ClientTls(ca_file or "", cert_file or "", key_file or "")
            if ca_file or cert_file or key_file
            else None
        )
        self._t = Transport(
            [endpoints] if isinstance(endpoints, str) else list(endpoints),
            timeout=timeout,
            username=username,
            password=password,
            metadata=metadata,
            channel_options=channel_options,
            tls=tls,
        )
        self._watches = WatchHub(self._t)
        self._keepalives = KeepAliveHub(self._t)

    # --- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop watches and keep-alives and close every channel (idempotent)."""
        if self._t.closed:
            return
        self._t.closed = True
        await self._watches.close()
        await self._keepalives.close()
        await self._t.close()

    @property
    def endpoints(self) -> list[str]:
        """The configured endpoints, as gRPC targets (``host:port``)."""
        return [e.target for e in self._t.endpoints]

    @property
    def endpoint(self) -> str:
        """The endpoint calls currently go to."""
        return self._t.current.target

    @property
    def watch_endpoint(self) -> str | None:
        """The endpoint the shared watch stream is (or was last) open on."""
        return self._watches.endpoint.target if self._watches.endpoint is not None else None

    @property
    def authentications(self) -> int:
        """How many times the client authenticated with its credentials (diagnostics)."""
        return self._t.authentications

    def _pin(self, endpoint: str | None) -> Endpoint | None:
        return None if endpoint is None else self._t.endpoint_for(endpoint)

    # --- KV ------------------------------------------------------------------------

    async def range(
        self,
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
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.RangeResponse:
        """Range over ``key`` or ``[key, range_end)``; linearizable unless ``serializable``."""
        request = range_request(
            key,
            range_end,
            limit=limit,
            revision=revision,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            sort_order=sort_order,
            sort_target=sort_target,
            min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision,
            min_create_revision=min_create_revision,
            max_create_revision=max_create_revision,
        )
        return await self._t.unary(
            RANGE, request, mutation=False, leader=not serializable, timeout=timeout,
            metadata=metadata,
        )

    async def get(
        self,
        key: KeyLike,
        *,
        revision: int = 0,
        serializable: bool = False,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> kv_pb2.KeyValue | None:
        """The ``KeyValue`` of ``key`` (at ``revision``), or None if it does not exist."""
        response = await self.range(
            key, revision=revision, serializable=serializable, timeout=timeout, metadata=metadata
        )
        return response.kvs[0] if response.kvs else None

    async def get_prefix(
        self,
        prefix: KeyLike,
        *,
        limit: int = 0,
        revision: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        sort_order: SortOrder = "none",
        sort_target: SortTarget = "key",
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.RangeResponse:
        """Every key under ``prefix``; ``header.revision`` is where a list-then-watch resumes."""
        return await self.range(
            prefix,
            prefix_end(prefix),
            limit=limit,
            revision=revision,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
            sort_order=sort_order,
            sort_target=sort_target,
            timeout=timeout,
            metadata=metadata,
        )

    async def put(
        self,
        key: KeyLike,
        value: KeyLike,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.PutResponse:
        """Write ``key``. A mutation: see the retry policy."""
        request = put_request(
            key, value, lease=lease, prev_kv=prev_kv, ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )
        return await self._t.unary(
            PUT, request, mutation=True, leader=True, timeout=timeout, metadata=metadata
        )

    async def delete_range(
        self,
        key: KeyLike,
        range_end: KeyLike = b"",
        *,
        prev_kv: bool = False,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.DeleteRangeResponse:
        """Delete ``key`` or ``[key, range_end)``. A mutation."""
        return await self._t.unary(
            DELETE_RANGE, delete_request(key, range_end, prev_kv=prev_kv), mutation=True,
            leader=True, timeout=timeout, metadata=metadata,
        )

    async def delete_prefix(
        self,
        prefix: KeyLike,
        *,
        prev_kv: bool = False,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.DeleteRangeResponse:
        """Delete every key under ``prefix``. A mutation."""
        return await self.delete_range(
            prefix, prefix_end(prefix), prev_kv=prev_kv, timeout=timeout, metadata=metadata
        )

    async def txn(
        self,
        compare: Iterable[pb.Compare] = (),
        success: Iterable[pb.RequestOp] = (),
        failure: Iterable[pb.RequestOp] = (),
        *,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.TxnResponse:
        """A transaction (build compares/ops with :mod:`consensus.client.kv`).

        A mutation unless every op (nested txns included) is a read, in which
        case it is retried like a read.
        """
        request = txn_request(compare, success, failure)
        return await self._t.unary(
            TXN, request, mutation=txn_writes([*request.success, *request.failure]), leader=True, timeout=timeout,
            metadata=metadata,
        )

    async def compact(
        self,
        revision: int,
        physical: bool = False,
        *,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.CompactionResponse:
        """Compact the history before ``revision`` (``physical``: wait until it is on disk)."""
        return await self._t.unary(
            COMPACT, pb.CompactionRequest(revision=revision, physical=physical), mutation=True,
            leader=True, timeout=timeout, metadata=metadata,
        )

    # --- Watch ---------------------------------------------------------------------

    def watch(
        self,
        key: KeyLike,
        range_end: KeyLike = b"",
        *,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: Iterable[WatchFilter] = (),
        progress_notify: bool = False,
        fragment: bool = False,
        watch_id: int = 0,
    ) -> Watch:
        """Watch ``key`` or ``[key, range_end)`` from ``start_revision`` (0: from now).

        Returns at once (the create request is sent in the background); the
        :class:`~consensus.client.watch.Watch` is an async iterator of
        ``WatchResponse`` batches and an async context manager that waits for
        creation on entry and cancels on exit. Must be called inside the loop.
        """
        return self._watches.watch(
            to_bytes(key),
            to_bytes(range_end),
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=filters,
            progress_notify=progress_notify,
            fragment=fragment,
            watch_id=watch_id,
        )

    def watch_prefix(
        self,
        prefix: KeyLike,
        *,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: Iterable[WatchFilter] = (),
        progress_notify: bool = False,
        fragment: bool = False,
    ) -> Watch:
        """Watch every key under ``prefix`` (see :meth:`watch`)."""
        return self.watch(
            prefix,
            prefix_end(prefix),
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=filters,
            progress_notify=progress_notify,
            fragment=fragment,
        )

    async def request_progress(self) -> bool:
        """Ask for a progress notification on every watch; False if the stream is not up."""
        return await self._watches.request_progress()

    # --- Lease ---------------------------------------------------------------------

    async def lease_grant(
        self,
        ttl: int,
        id: int = 0,
        *,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.LeaseGrantResponse:
        """Grant a lease of ``ttl`` seconds (``id`` 0: the server picks). A mutation."""
        return await self._t.unary(
            LEASE_GRANT, pb.LeaseGrantRequest(TTL=ttl, ID=id), mutation=True, leader=True,
            timeout=timeout, metadata=metadata,
        )

    async def lease_revoke(
        self,
        id: int,
        *,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.LeaseRevokeResponse:
        """Revoke a lease, deleting its keys. A mutation."""
        return await self._t.unary(
            LEASE_REVOKE, pb.LeaseRevokeRequest(ID=id), mutation=True, leader=True,
            timeout=timeout, metadata=metadata,
        )

    async def lease_time_to_live(
        self,
        id: int,
        keys: bool = False,
        *,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> pb.LeaseTimeToLiveResponse:
        """The remaining and granted TTL of a lease (TTL -1: not found), optionally its keys."""
        return await self._t.unary(
            LEASE_TTL, pb.LeaseTimeToLiveRequest(ID=id, keys=keys), mutation=False, leader=True,
            timeout=timeout, metadata=metadata,
        )

    async def lease_leases(
        self, *, timeout: float | None = None, metadata: MetadataPairs = ()
    ) -> pb.LeaseLeasesResponse:
        """Every live lease."""
        return await self._t.unary(
            LEASE_LEASES, pb.LeaseLeasesRequest(), mutation=False, leader=True, timeout=timeout,
            metadata=metadata,
        )

    async def lease_keepalive_once(
        self, id: int, *, timeout: float | None = None
    ) -> pb.LeaseKeepAliveResponse:
        """Renew a lease once; raises LeaseNotFoundError if it is gone. Retried like a read."""
        loop = asyncio.get_running_loop()
        deadline = self._t.deadline(timeout)
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            try:
                response = await self._keepalives.renew(id, remaining)
                break
            except EtcdError as error:
                if not is_transient(error) or (deadline is not None and loop.time() >= deadline):
                    raise
                await asyncio.sleep(0.05)
        if response.TTL <= 0:
            raise LeaseNotFoundError(
                "etcdserver: requested lease not found", grpc.StatusCode.NOT_FOUND
            )
        return response

    def keep_alive(
        self,
        id: int,
        *,
        on_lost: Callable[[EtcdError], object] | None = None,
    ) -> KeepAlive:
        """Start renewing a lease every TTL/3 in the background; see :class:`KeepAlive`.

        ``on_lost(error)`` is called once if the lease is lost. Must be called
        inside the loop.
        """
        self._t.check_open()
        return self._keepalives.keep_alive(id, on_lost)

    # --- Cluster -------------------------------------------------------------------

    async def member_list(
        self, *, linearizable: bool = False, timeout: float | None = None
    ) -> pb.MemberListResponse:
        """The cluster's members."""
        return await self._t.unary(
            MEMBER_LIST, pb.MemberListRequest(linearizable=linearizable), mutation=False,
            leader=linearizable, timeout=timeout,
        )

    async def member_add(
        self, peer_urls: Sequence[str], is_learner: bool = False, *, timeout: float | None = None
    ) -> pb.MemberAddResponse:
        """Add a member (or a learner) with these peer URLs. A mutation."""
        return await self._t.unary(
            MEMBER_ADD, pb.MemberAddRequest(peerURLs=list(peer_urls), isLearner=is_learner),
            mutation=True, leader=True, timeout=timeout,
        )

    async def member_remove(
        self, id: int, *, timeout: float | None = None
    ) -> pb.MemberRemoveResponse:
        """Remove a member. A mutation."""
        return await self._t.unary(
            MEMBER_REMOVE, pb.MemberRemoveRequest(ID=id), mutation=True, leader=True,
            timeout=timeout,
        )

    async def member_update(
        self, id: int, peer_urls: Sequence[str], *, timeout: float | None = None
    ) -> pb.MemberUpdateResponse:
        """Change a member's peer URLs. A mutation."""
        return await self._t.unary(
            MEMBER_UPDATE, pb.MemberUpdateRequest(ID=id, peerURLs=list(peer_urls)),
            mutation=True, leader=True, timeout=timeout,
        )

    async def member_promote(
        self, id: int, *, timeout: float | None = None
    ) -> pb.MemberPromoteResponse:
        """Promote a learner to a voting member. A mutation."""
        return await self._t.unary(
            MEMBER_PROMOTE, pb.MemberPromoteRequest(ID=id), mutation=True, leader=True,
            timeout=timeout,
        )

    # --- Flagstaff's audit trail (a Flagstaff core only) -------------------------

    async def audit_list(
        self,
        key: KeyLike = b"",
        *,
        prefix: bool = False,
        limit: int = 0,
        page_token: str = "",
        serializable: bool = False,
        timeout: float | None = None,
        **filters: Any,
    ) -> apb.ListResponse:
        """Audit records newest first (``flagstaff.audit.v1.Audit/List``).

        ``key`` (one key, or with ``prefix=True`` every key under it) and the
        keyword filters of :func:`consensus.client.audit.audit_filter`
        (``actor``, ``principal``, ``source``, ``action``, ``min_revision``,
        ``max_revision``, ``since_ms``, ``until_ms``); the response's
        ``next_page_token`` continues with older records.
        """
        request = apb.ListRequest(
            filter=audit_filter(key, prefix=prefix, **filters), limit=limit,
            page_token=page_token, serializable=serializable,
        )
        return await self._t.unary(
            AUDIT_LIST, request, mutation=False, leader=not serializable, timeout=timeout
        )

    def audit_watch(
        self,
        key: KeyLike = b"",
        *,
        prefix: bool = False,
        start_revision: int = 0,
        after_id: int = 0,
        metadata: MetadataPairs = (),
        **filters: Any,
    ) -> AsyncIterator[apb.Record]:
        """Audit records as they are applied (``Audit/Watch``), oldest first, forever.

        From ``start_revision`` (retained records first), after record
        ``after_id``, or (neither) only new ones. Reconnects resume without a gap.
        """
        request = apb.WatchRequest(
            filter=audit_filter(key, prefix=prefix, **filters),
            start_revision=start_revision, after_id=after_id,
        )
        return watch_records(self._t, request, metadata)

    async def audit_append(
        self,
        action: str,
        *,
        key: KeyLike = b"",
        detail: str = "",
        timeout: float | None = None,
        metadata: MetadataPairs = (),
    ) -> apb.AppendResponse:
        """Record a platform event (``Audit/Append``); actor/reason/source go in ``metadata``.

        A mutation (see the retry policy); trusted principals only while core auth is on.
        """
        request = apb.AppendRequest(action=action, key=to_bytes(key), detail=detail)
        return await self._t.unary(
            AUDIT_APPEND, request, mutation=True, leader=True, timeout=timeout, metadata=metadata
        )

    # --- Maintenance ---------------------------------------------------------------

    async def status(
        self, *, endpoint: str | None = None, timeout: float | None = None
    ) -> pb.StatusResponse:
        """A member's status (the current endpoint's, or ``endpoint``'s without failover)."""
        return await self._t.unary(
            STATUS, pb.StatusRequest(), mutation=False, leader=False, timeout=timeout,
            endpoint=self._pin(endpoint),
        )

    async def alarm_list(self, *, timeout: float | None = None) -> pb.AlarmResponse:
        """The raised alarms (NOSPACE, CORRUPT) of every member."""
        request = pb.AlarmRequest(action=pb.AlarmRequest.GET, memberID=0, alarm=pb.NONE)
        return await self._t.unary(ALARM, request, mutation=False, leader=True, timeout=timeout)

    async def alarm_disarm(
        self,
        member_id: int = 0,
        alarm: pb.AlarmType = pb.NONE,
        *,
        timeout: float | None = None,
    ) -> pb.AlarmResponse:
        """Disarm one alarm, or (no arguments) every raised alarm as ``etcdctl alarm disarm``."""
        if member_id or alarm != pb.NONE:
            targets = [pb.AlarmMember(memberID=member_id, alarm=alarm)]
        else:
            targets = list((await self.alarm_list(timeout=timeout)).alarms)
        response = pb.AlarmResponse()
        for target in targets:
            request = pb.AlarmRequest(
                action=pb.AlarmRequest.DEACTIVATE, memberID=target.memberID, alarm=target.alarm
            )
            answer = await self._t.unary(
                ALARM, request, mutation=True, leader=True, timeout=timeout
            )
            response.header.CopyFrom(answer.header)
            response.alarms.extend(answer.alarms)
        return response

    async def hash_kv(
        self, revision: int = 0, *, endpoint: str | None = None, timeout: float | None = None
    ) -> pb.HashKVResponse:
        """A member's hash of the KV store up to ``revision`` (0: latest)."""
        return await self._t.unary(
            HASH_KV, pb.HashKVRequest(revision=revision), mutation=False, leader=False,
            timeout=timeout, endpoint=self._pin(endpoint),
        )

    async def defragment(
        self, *, endpoint: str | None = None, timeout: float | None = None
    ) -> pb.DefragmentResponse:
        """Defragment a member's backend database."""
        return await self._t.unary(
            DEFRAGMENT, pb.DefragmentRequest(), mutation=False, leader=False, timeout=timeout,
            endpoint=self._pin(endpoint),
        )

    async def snapshot(
        self, *, endpoint: str | None = None, timeout: float | None = math.inf
    ) -> AsyncIterator[bytes]:
        """Stream a member's backend snapshot as byte chunks (no deadline by default).

        Fails over (and refreshes an invalid token) only before the first
        chunk; a failure later raises, since the snapshot would be partial.
        """
        pinned = self._pin(endpoint)
        loop = asyncio.get_running_loop()
        deadline = self._t.deadline(timeout)
        refreshed = False
        while True:
            self._t.check_open()
            target = pinned if pinned is not None else self._t.current
            token = await self._t.token()
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            call = target.unary_stream(SNAPSHOT)(
                pb.SnapshotRequest(), timeout=remaining,
                metadata=self._t.call_metadata(token, leader=False),
            )
            started = False
            try:
                async for chunk in call:
                    started = True
                    yield chunk.blob
                return
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc)
                if started:
                    raise error from exc
                if self._t.has_credentials and not refreshed and error.code in (
                    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
                ):
                    refreshed = True
                    await self._t.refresh_token(token)
                    continue
                if pinned is not None or not is_transient(error):
                    raise error from exc
                if deadline is not None and loop.time() >= deadline:
                    raise error from exc
                self._t.mark_failed(target)
                await asyncio.sleep(0.05)
            finally:
                call.cancel()

    async def move_leader(
        self, target_id: int, *, timeout: float | None = None
    ) -> pb.MoveLeaderResponse:
        """Transfer leadership to member ``target_id`` (sent to the leader, found by Status)."""
        for endpoint in self._t.endpoints:
            try:
                status = await self._t.unary(
                    STATUS, pb.StatusRequest(), mutation=False, leader=False, timeout=timeout,
                    endpoint=endpoint,
                )
            except EtcdError:
                continue
            if status.leader and status.leader == status.header.member_id:
                return await self._t.unary(
                    MOVE_LEADER, pb.MoveLeaderRequest(targetID=target_id), mutation=True,
                    leader=False, timeout=timeout, endpoint=endpoint,
                )
        raise NoLeaderError("etcdserver: no leader", grpc.StatusCode.UNAVAILABLE)

    # --- Auth ----------------------------------------------------------------------

    async def authenticate(
        self, name: str, password: str, *, timeout: float | None = None
    ) -> pb.AuthenticateResponse:
        """Get a token for ``name`` (the client's own credentials are handled automatically)."""
        return await self._t.unary(
            AUTHENTICATE, pb.AuthenticateRequest(name=name, password=password), mutation=False,
            leader=True, timeout=timeout, use_token=False,
        )

    async def auth_enable(self, *, timeout: float | None = None) -> pb.AuthEnableResponse:
        """Turn authentication on (needs a ``root`` user with the ``root`` role)."""
        return await self._t.unary(
            AUTH_ENABLE, pb.AuthEnableRequest(), mutation=True, leader=True, timeout=timeout
        )

    async def auth_disable(self, *, timeout: float | None = None) -> pb.AuthDisableResponse:
        """Turn authentication off."""
        return await self._t.unary(
            AUTH_DISABLE, pb.AuthDisableRequest(), mutation=True, leader=True, timeout=timeout
        )

    async def auth_status(self, *, timeout: float | None = None) -> pb.AuthStatusResponse:
        """Whether authentication is on, and the auth store's revision."""
        return await self._t.unary(
            AUTH_STATUS, pb.AuthStatusRequest(), mutation=False, leader=True, timeout=timeout
        )

    async def user_add(
        self,
        name: str,
        password: str = "",
        *,
        no_password: bool = False,
        timeout: float | None = None,
    ) -> pb.AuthUserAddResponse:
        """Add a user (``no_password``: it can only use other means, e.g. TLS identity)."""
        request = pb.AuthUserAddRequest(
            name=name, password=password, options=auth_pb2.UserAddOptions(no_password=no_password)
        )
        return await self._t.unary(USER_ADD, request, mutation=True, leader=True, timeout=timeout)

    async def user_delete(
        self, name: str, *, timeout: float | None = None
    ) -> pb.AuthUserDeleteResponse:
        """Delete a user."""
        return await self._t.unary(
            USER_DELETE, pb.AuthUserDeleteRequest(name=name), mutation=True, leader=True,
            timeout=timeout,
        )

    async def user_get(self, name: str, *, timeout: float | None = None) -> pb.AuthUserGetResponse:
        """A user's roles."""
        return await self._t.unary(
            USER_GET, pb.AuthUserGetRequest(name=name), mutation=False, leader=True,
            timeout=timeout,
        )

    async def user_list(self, *, timeout: float | None = None) -> pb.AuthUserListResponse:
        """Every user name."""
        return await self._t.unary(
            USER_LIST, pb.AuthUserListRequest(), mutation=False, leader=True, timeout=timeout
        )

    async def user_change_password(
        self, name: str, password: str, *, timeout: float | None = None
    ) -> pb.AuthUserChangePasswordResponse:
        """Set a user's password (its tokens stop working)."""
        return await self._t.unary(
            USER_CHANGE_PASSWORD, pb.AuthUserChangePasswordRequest(name=name, password=password),
            mutation=True, leader=True, timeout=timeout,
        )

    async def user_grant_role(
        self, user: str, role: str, *, timeout: float | None = None
    ) -> pb.AuthUserGrantRoleResponse:
        """Give ``user`` the ``role``."""
        return await self._t.unary(
            USER_GRANT_ROLE, pb.AuthUserGrantRoleRequest(user=user, role=role), mutation=True,
            leader=True, timeout=timeout,
        )

    async def user_revoke_role(
        self, user: str, role: str, *, timeout: float | None = None
    ) -> pb.AuthUserRevokeRoleResponse:
        """Take ``role`` from ``user``."""
        return await self._t.unary(
            USER_REVOKE_ROLE, pb.AuthUserRevokeRoleRequest(name=user, role=role), mutation=True,
            leader=True, timeout=timeout,
        )

    async def role_add(self, name: str, *, timeout: float | None = None) -> pb.AuthRoleAddResponse:
        """Add a role."""
        return await self._t.unary(
            ROLE_ADD, pb.AuthRoleAddRequest(name=name), mutation=True, leader=True,
            timeout=timeout,
        )

    async def role_delete(
        self, name: str, *, timeout: float | None = None
    ) -> pb.AuthRoleDeleteResponse:
        """Delete a role."""
        return await self._t.unary(
            ROLE_DELETE, pb.AuthRoleDeleteRequest(role=name), mutation=True, leader=True,
            timeout=timeout,
        )

    async def role_get(self, name: str, *, timeout: float | None = None) -> pb.AuthRoleGetResponse:
        """A role's key-range permissions."""
        return await self._t.unary(
            ROLE_GET, pb.AuthRoleGetRequest(role=name), mutation=False, leader=True,
            timeout=timeout,
        )

    async def role_list(self, *, timeout: float | None = None) -> pb.AuthRoleListResponse:
        """Every role name."""
        return await self._t.unary(
            ROLE_LIST, pb.AuthRoleListRequest(), mutation=False, leader=True, timeout=timeout
        )

    async def role_grant_permission(
        self,
        role: str,
        key: KeyLike,
        range_end: KeyLike = b"",
        perm: PermissionType = "readwrite",
        *,
        timeout: float | None = None,
    ) -> pb.AuthRoleGrantPermissionResponse:
        """Let ``role`` read/write ``key`` or ``[key, range_end)``."""
        try:
            perm_type = _PERMISSION[perm]
        except KeyError:
            raise ValueError(f"unknown permission {perm!r}; use read, write or readwrite") from None
        request = pb.AuthRoleGrantPermissionRequest(
            name=role,
            perm=auth_pb2.Permission(
                permType=perm_type, key=to_bytes(key), range_end=to_bytes(range_end)
            ),
        )
        return await self._t.unary(
            ROLE_GRANT_PERMISSION, request, mutation=True, leader=True, timeout=timeout
        )

    async def role_revoke_permission(
        self,
        role: str,
        key: KeyLike,
        range_end: KeyLike = b"",
        *,
        timeout: float | None = None,
    ) -> pb.AuthRoleRevokePermissionResponse:
        """Remove ``role``'s permission on exactly ``key`` / ``[key, range_end)``."""
        request = pb.AuthRoleRevokePermissionRequest(
            role=role, key=to_bytes(key), range_end=to_bytes(range_end)
        )
        return await self._t.unary(
            ROLE_REVOKE_PERMISSION, request, mutation=True, leader=True, timeout=timeout
        )
