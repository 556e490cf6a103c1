"""The permission checks of every etcd RPC while auth is enabled (one place for all services).

Two layers, as in etcd:

- **At the API** (before serving or proposing): the caller's token is read
  from the gRPC metadata on every RPC and verified (``auth_tokens``); reads
  served locally (Range, read-only Txn, Watch) are checked here, after the
  linearizable barrier, and so are the non-KV RPCs (:func:`authorize` with a
  :class:`Need`).
- **In apply** (:func:`check_apply`): Put, DeleteRange, Txn and a client's
  LeaseRevoke are checked against the auth state *at their log position*,
  with the principal the proposer put in the entry (etcd's
  ``authApplierV3``). Every member decides alike, and a permission revoked
  while a write was in flight is honoured.

The policy (etcd 3.4 unless marked):

==========================================  ======================================
RPC                                          needs
==========================================  ======================================
Range, Txn compares and range ops            READ on ``[key, range_end)``
Put, DeleteRange, Txn put/delete ops         WRITE (and READ with ``prev_kv``)
Put with a lease                             WRITE on every key of that lease
Txn (nested too)                             each op and compare, recursively
Watch create                                 READ on the watched range
LeaseRevoke                                  WRITE on every key of the lease
LeaseGrant/KeepAlive/TimeToLive/Leases       an authenticated user [#user]_
Compact                                      the root role [#root]_
Alarm activate/deactivate                    the root role [#root]_
Alarm get, Status, MemberList                anyone (a sent token must be valid)
MemberAdd/Remove/Update/Promote              the root role
MoveLeader                                   the root role [#root]_
Defragment, Snapshot, Hash, HashKV           the root role; errors unmapped [#maint]_
Auth management, UserList, RoleList          the root role
UserGet / RoleGet                            root, or the user itself / a holder
Authenticate                                 anyone
==========================================  ======================================

.. [#user] etcd 3.4 lets anonymous clients grant and renew leases.
.. [#root] etcd 3.4 does not check these at all.
.. [#maint] etcd 3.4's Maintenance service returns the auth store's raw error
   (code Unknown, e.g. ``auth: permission denied``); so do we.

The ``root`` role passes every check. A call without a token while auth is on
is refused with "etcdserver: user name is empty" (etcd's ErrUserEmpty).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc import LeaseTable
from consensus.server.auth_store import (
    READ,
    WRITE,
    AuthError,
    AuthStore,
    UnmappedAuthError,
    UserEmptyError,
    WatchCanceledError,
)
from consensus.server.auth_tokens import user_of
from consensus.server.internal_request import InternalRequest, Op

if TYPE_CHECKING:
    import grpc

    from consensus.server.etcd_server import EtcdServer


class Need(enum.Enum):
    """What a non-KV RPC requires of its caller while auth is enabled."""

    ANY = "any"
    """Anyone; a token that is sent must still be valid."""
    USER = "user"
    """An authenticated user."""
    ADMIN = "admin"
    """A user with the root role (etcd's ``IsAdminPermitted``)."""


# -- checks on requests (pure: used by the API layer and by apply) ---------------------------
def check_range(store: AuthStore, user: str, key: bytes, range_end: bytes) -> None:
    store.check_permitted(user, key, range_end, READ)


def check_put(store: AuthStore, leases: LeaseTable, user: str, r: pb.PutRequest) -> None:
    store.check_permitted(user, r.key, b"", WRITE)
    if r.lease:
        # The lease's keys must all be writable: attaching a lease one could not
        # revoke would let a user delete keys they cannot write (etcd's checkLeasePuts).
        check_lease_keys(store, leases, user, r.lease)
    if r.prev_kv:
        store.check_permitted(user, r.key, b"", READ)


def check_delete(store: AuthStore, user: str, r: pb.DeleteRangeRequest) -> None:
    store.check_permitted(user, r.key, r.range_end, WRITE)
    if r.prev_kv:
        store.check_permitted(user, r.key, r.range_end, READ)


def check_txn(store: AuthStore, leases: LeaseTable, user: str, r: pb.TxnRequest) -> None:
    """Every compare needs READ; every op of both branches its own check, nested txns too."""
    for c in r.compare:
        store.check_permitted(user, c.key, c.range_end, READ)
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range":
            check_range(store, user, op.request_range.key, op.request_range.range_end)
        elif kind == "request_put":
            check_put(store, leases, user, op.request_put)
        elif kind == "request_delete_range":
            check_delete(store, user, op.request_delete_range)
        elif kind == "request_txn":
            check_txn(store, leases, user, op.request_txn)


def check_lease_keys(store: AuthStore, leases: LeaseTable, user: str, lease_id: int) -> None:
    """WRITE on every key attached to the lease (root passes at once)."""
    if not store.enabled or store.is_admin(user):
        return
    lease = leases.get(lease_id)
    if lease is None:
        return
    for key in sorted(lease.keys):
        store.check_permitted(user, key, b"", WRITE)


def check_apply(store: AuthStore, leases: LeaseTable, req: InternalRequest) -> None:
    """Apply-time check of a replicated KV write or a client's lease revoke (raises AuthError).

    A LeaseRevoke with no principal is the leader's expiry of the lease (etcd
    revokes those as root); a client's revoke always carries its user.
    """
    if not store.enabled:
        return
    op, user = req.op, req.principal
    if op == Op.PUT:
        check_put(store, leases, user, pb.PutRequest.FromString(req.body))
    elif op == Op.DELETE_RANGE:
        check_delete(store, user, pb.DeleteRangeRequest.FromString(req.body))
    elif op == Op.TXN:
        check_txn(store, leases, user, pb.TxnRequest.FromString(req.body))
    elif op == Op.LEASE_REVOKE and user:
        check_lease_keys(store, leases, user, pb.LeaseRevokeRequest.FromString(req.body).ID)


# -- checks on calls (the gRPC layer) ----------------------------------------------------------
def _store(server: EtcdServer) -> AuthStore:
    store: AuthStore = server.fsm.auth
    return store


def authorize(
    server: EtcdServer,
    context: grpc.aio.ServicerContext | None,
    need: Need = Need.USER,
    *,
    maintenance: bool = False,
) -> str:
    """Check a call against ``need``; the caller's user name ('' when auth is off or anonymous).

    ``maintenance=True`` reports refusals as etcd 3.4's Maintenance service
    does (code Unknown, the auth store's raw text).
    """
    store = _store(server)
    try:
        user = user_of(store, context)
        if not store.enabled or need == Need.ANY:
            return user
        if need == Need.ADMIN:
            store.check_admin(user)
        elif not user:
            raise UserEmptyError()
        return user
    except AuthError as exc:
        if maintenance:
            raise UnmappedAuthError.of(exc) from None
        raise


def authorize_range(
    server: EtcdServer, context: grpc.aio.ServicerContext | None, key: bytes, range_end: bytes
) -> str:
    """READ on ``[key, range_end)`` (Range); the caller's user name."""
    store = _store(server)
    user = user_of(store, context)
    check_range(store, user, key, range_end)
    return user


def authorize_txn(
    server: EtcdServer, context: grpc.aio.ServicerContext | None, request: pb.TxnRequest
) -> str:
    """Every compare and op of a txn (served locally when read-only); the caller's user name."""
    store = _store(server)
    user = user_of(store, context)
    check_txn(store, server.fsm.kv.leases, user, request)
    return user


def authorize_watch(
    server: EtcdServer, context: grpc.aio.ServicerContext | None, key: bytes, range_end: bytes
) -> None:
    """READ on the watched range (Watch create); a refusal is worded as etcd's cancel reason.

    etcd 3.4 checks only ``key`` of a from-key watch (it turns ``range_end``
    ``"\\x00"`` into an empty one first); the whole range is checked here.
    """
    try:
        authorize_range(server, context, key, range_end)
    except AuthError as exc:
        raise WatchCanceledError.of(exc) from None


def authorize_lease_revoke(
    server: EtcdServer, context: grpc.aio.ServicerContext | None, lease_id: int
) -> str:
    """WRITE on every key attached to the lease (LeaseRevoke); the caller's user name.

    Apply checks it again at the entry's log position (:func:`check_apply`).
    """
    store = _store(server)
    user = authorize(server, context, Need.USER)
    check_lease_keys(store, server.fsm.kv.leases, user, lease_id)
    return user
