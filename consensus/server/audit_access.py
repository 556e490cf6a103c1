"""Who may write audit metadata and platform events, and who may read which audit records.

The policy while core auth is enabled (with auth off everyone is trusted and
every record is visible, as every key is):

* A **trusted principal** is a user with the ``root`` role or the
  :data:`TRUSTED_ROLE` role (the platform's core user). Only a trusted
  principal may send the on-behalf-of metadata ``flagstaff-actor``,
  ``flagstaff-reason`` and ``flagstaff-source`` with a write: a write from
  anyone else that carries any of them is refused at apply, before any change
  (:class:`AuditMetadataDeniedError`), so the trail never shows an actor the
  caller made up. Without the metadata such a user's writes are recorded with
  their own principal and source ``grpc``.
* Only a trusted principal may ``Append`` platform events.
* Reading (``List``/``Watch``): root and trusted principals see every record;
  anyone else sees the changes of keys they may READ (a record whose keys are
  all unreadable is left out, a multi-key record is cut down to the readable
  keys) and no platform events.

The apply-time checks run at the entry's log position, against the auth state
there, so every member decides alike.
"""

from __future__ import annotations

import json

from consensus.api.gen.etcd.authpb import auth_pb2
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc.audit import KV_ACTIONS, AuditRecord
from consensus.server.auth_store import (
    READ,
    AuthError,
    AuthOp,
    AuthStore,
    PermissionDeniedError,
)
from consensus.server.internal_request import InternalRequest, Op

TRUSTED_ROLE = "flagstaff-platform"
"""The core role that makes a user a trusted principal for the audit trail."""

AUTH_ACTION_PREFIX = "auth."
"""Actions of the core's own auth-store changes (``auth.user_add`` ...): not for Append."""

EXPIRY_SOURCE = "expiry"
"""The source of the leader's lease-expiry revokes (action ``lease_expire``)."""


class AuditMetadataDeniedError(PermissionDeniedError):
    """Audit metadata (actor, reason, source) sent by a principal that is not trusted."""

    message = (
        "flagstaff: audit metadata (flagstaff-actor, flagstaff-reason, flagstaff-source) "
        "needs a trusted principal"
    )


class InvalidAuditEventError(AuthError):
    """A platform event without an action, or with an action the core keeps for key changes."""

    message = (
        "flagstaff: an audit event needs an action that is not put, delete, txn, lease_* or auth.*"
    )
    grpc_code = "INVALID_ARGUMENT"


def is_trusted(store: AuthStore, principal: str) -> bool:
    """Whether ``principal`` may act on others' behalf (always, while auth is off)."""
    if not store.enabled:
        return True
    user = store.users.get(principal)
    return user is not None and (user.has_root_role() or TRUSTED_ROLE in user.roles)


def action_of(req: InternalRequest) -> str:
    """The record's action for a KV write (``put``, ``delete``, ``txn``, ``lease_*``)."""
    op = req.op
    if op == Op.PUT:
        return "put"
    if op == Op.DELETE_RANGE:
        return "delete"
    if op == Op.TXN:
        return "txn"
    if not req.principal and req.source == EXPIRY_SOURCE:
        return "lease_expire"
    return "lease_revoke"


def check_audit_metadata(store: AuthStore, req: InternalRequest) -> None:
    """Refuse a write carrying audit metadata from an untrusted principal (auth on only).

    The leader's own lease-expiry revoke (no principal) is exempt.
    """
    if not (req.actor or req.reason or req.source):
        return
    if req.op == Op.LEASE_REVOKE and not req.principal:
        return
    if not is_trusted(store, req.principal):
        raise AuditMetadataDeniedError()


def check_append(store: AuthStore, req: InternalRequest, action: str) -> None:
    """A platform event: a trusted principal and an action of its own."""
    if not is_trusted(store, req.principal):
        raise PermissionDeniedError()
    if not action or action in KV_ACTIONS or action.startswith(AUTH_ACTION_PREFIX):
        raise InvalidAuditEventError()


def visible(store: AuthStore, user: str, record: AuditRecord) -> AuditRecord | None:
    """``record`` as ``user`` may see it: whole, cut down to readable keys, or None."""
    if is_trusted(store, user):
        return record
    if not record.changes:
        return None  # platform events and auth.* records: trusted principals only
    readable = []
    for change in record.changes:
        try:
            store.check_permitted(user, change.key, b"", READ)
        except AuthError:
            continue
        readable.append(change)
    if not readable:
        return None
    if len(readable) == len(record.changes):
        return record
    return record._replace(changes=tuple(readable))


def describe_auth(body: bytes) -> tuple[str, str]:
    """An applied ``Op.AUTH`` body as a record's (action, JSON detail); never a password."""
    kind = AuthOp(body[0])
    payload = body[1:]
    detail: dict[str, str] = {}
    if kind == AuthOp.USER_ADD:
        detail = {"user": pb.AuthUserAddRequest.FromString(payload).name}
    elif kind == AuthOp.USER_DELETE:
        detail = {"user": pb.AuthUserDeleteRequest.FromString(payload).name}
    elif kind == AuthOp.USER_CHANGE_PASSWORD:
        detail = {"user": pb.AuthUserChangePasswordRequest.FromString(payload).name}
    elif kind == AuthOp.USER_GRANT_ROLE:
        g = pb.AuthUserGrantRoleRequest.FromString(payload)
        detail = {"user": g.user, "role": g.role}
    elif kind == AuthOp.USER_REVOKE_ROLE:
        r = pb.AuthUserRevokeRoleRequest.FromString(payload)
        detail = {"user": r.name, "role": r.role}
    elif kind == AuthOp.ROLE_ADD:
        detail = {"role": pb.AuthRoleAddRequest.FromString(payload).name}
    elif kind == AuthOp.ROLE_DELETE:
        detail = {"role": pb.AuthRoleDeleteRequest.FromString(payload).role}
    elif kind == AuthOp.ROLE_GRANT_PERMISSION:
        gp = pb.AuthRoleGrantPermissionRequest.FromString(payload)
        detail = {
            "role": gp.name, "perm": auth_pb2.Permission.Type.Name(gp.perm.permType),
            "key": _text(gp.perm.key), "range_end": _text(gp.perm.range_end),
        }
    elif kind == AuthOp.ROLE_REVOKE_PERMISSION:
        rp = pb.AuthRoleRevokePermissionRequest.FromString(payload)
        detail = {"role": rp.role, "key": _text(rp.key), "range_end": _text(rp.range_end)}
    action = AUTH_ACTION_PREFIX + kind.name.lower()
    return action, json.dumps(detail, sort_keys=True) if detail else ""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")
