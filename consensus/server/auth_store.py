"""etcd's auth store: the replicated users, roles, key-range permissions and enabled flag.

``AuthStore`` is part of the replicated state machine (``EtcdStateMachine``
applies ``Op.AUTH`` entries to it and snapshots it with the key space). It
follows etcd 3.4's ``auth/store.go``:

- users have a password hash (or none, ``no_password``) and a sorted list of
  role names; roles have key-range permissions (READ, WRITE, READWRITE) kept
  sorted by key; the ``root`` role grants everything;
- every change bumps the auth ``revision`` (AuthEnable does not, as in etcd);
- AuthEnable needs a ``root`` user that has the ``root`` role; while auth is
  on, ``root`` cannot be deleted nor lose the ``root`` role, and the ``root``
  role cannot be deleted;
- every mutation needs the ``root`` role while auth is on; the principal is
  the authenticated user the proposer put in the entry.

Determinism: apply never hashes or draws randomness. The proposing member
hashes a new password (scrypt, random salt) and draws the token signing key
at AuthEnable *before* proposing; apply only stores what the entry carries.

Wire format of an ``Op.AUTH`` body: one :class:`AuthOp` byte, then the etcd
request's protobuf bytes (for ``ENABLE``: the 32-byte signing key instead of
the empty ``AuthEnableRequest``).

Errors carry etcd's exact gRPC codes and texts (``rpctypes/error.go``). They
subclass ``MVCCError`` so that apply returns them as values like the key
space's refusals and the gRPC layer maps them the same way.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import os
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, ClassVar

from consensus.api.gen.etcd.authpb import auth_pb2 as authpb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc import MVCCError
from consensus.mvcc.keyrange import FROM_KEY

ROOT_USER = "root"
ROOT_ROLE = "root"

READ = authpb.Permission.READ
WRITE = authpb.Permission.WRITE
READWRITE = authpb.Permission.READWRITE

SIGNING_KEY_BYTES = 32
_STORE_FORMAT = 1


# -- errors (etcd's texts and codes) ---------------------------------------------------------
class AuthError(MVCCError):
    """An auth refusal, with etcd's gRPC code and message."""

    message = "etcdserver: auth error"
    grpc_code = "FAILED_PRECONDITION"


class RootUserNotExistError(AuthError):
    message = "etcdserver: root user does not exist"


class RootRoleNotExistError(AuthError):
    message = "etcdserver: root user does not have root role"


class UserAlreadyExistError(AuthError):
    message = "etcdserver: user name already exists"


class UserEmptyError(AuthError):
    message = "etcdserver: user name is empty"
    grpc_code = "INVALID_ARGUMENT"


class UserNotFoundError(AuthError):
    message = "etcdserver: user name not found"


class RoleAlreadyExistError(AuthError):
    message = "etcdserver: role name already exists"


class RoleNotFoundError(AuthError):
    message = "etcdserver: role name not found"


class RoleEmptyError(AuthError):
    message = "etcdserver: role name is empty"
    grpc_code = "INVALID_ARGUMENT"


class PermissionNotGivenError(AuthError):
    message = "etcdserver: permission not given"
    grpc_code = "INVALID_ARGUMENT"


class AuthFailedError(AuthError):
    message = "etcdserver: authentication failed, invalid user ID or password"
    grpc_code = "INVALID_ARGUMENT"


class PermissionDeniedError(AuthError):
    message = "etcdserver: permission denied"
    grpc_code = "PERMISSION_DENIED"


class RoleNotGrantedError(AuthError):
    message = "etcdserver: role is not granted to the user"


class PermissionNotGrantedError(AuthError):
    message = "etcdserver: permission is not granted to the role"


class AuthNotEnabledError(AuthError):
    message = "etcdserver: authentication is not enabled"


class InvalidAuthTokenError(AuthError):
    message = "etcdserver: invalid auth token"
    grpc_code = "UNAUTHENTICATED"


class InvalidAuthMgmtError(AuthError):
    message = "etcdserver: invalid auth management"
    grpc_code = "INVALID_ARGUMENT"


class WatchCanceledError(AuthError):
    """An auth refusal of a watch create, worded as etcd 3.4 words the watch's cancel reason.

    etcd puts the *string* of the gRPC error in the cancel reason
    (``rpc error: code = PermissionDenied desc = etcdserver: permission
    denied``): an empty user and an invalid token keep their own error, every
    other refusal reads as permission denied.
    """

    message = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    grpc_code = "PERMISSION_DENIED"

    _GO_CODES: ClassVar[dict[str, str]] = {
        "INVALID_ARGUMENT": "InvalidArgument",
        "UNAUTHENTICATED": "Unauthenticated",
    }

    @classmethod
    def of(cls, exc: AuthError) -> WatchCanceledError:
        if isinstance(exc, UserEmptyError | InvalidAuthTokenError):
            return cls(f"rpc error: code = {cls._GO_CODES[exc.grpc_code]} desc = {exc}")
        return cls()


class UnmappedAuthError(AuthError):
    """An auth error as etcd 3.4's Maintenance service returns it: code Unknown, raw text.

    etcd's ``authMaintenanceServer`` returns the auth store's own error
    without translating it, so clients see e.g. ``auth: permission denied``.
    """

    grpc_code = "UNKNOWN"

    _RAW: ClassVar[dict[type[AuthError], str]] = {
        UserEmptyError: "auth: user name is empty",
        UserNotFoundError: "auth: user not found",
        PermissionDeniedError: "auth: permission denied",
        InvalidAuthTokenError: "auth: invalid auth token",
    }

    @classmethod
    def of(cls, exc: AuthError) -> AuthError:
        raw = cls._RAW.get(type(exc))
        return cls(raw) if raw is not None else exc


# -- passwords --------------------------------------------------------------------------------
_SCRYPT_N = 1 << 14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A slow salted hash of ``password`` (scrypt), self-describing: ``scrypt$n$r$p$salt$hash``.

    Called by the proposing member (in a worker thread: it takes ~0.1 s),
    never by apply.
    """
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM, dklen=32,
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` result (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = hashed.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            maxmem=_SCRYPT_MAXMEM, dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


# -- state ------------------------------------------------------------------------------------
class AuthOp(enum.IntEnum):
    """The sub-kind byte of an ``Op.AUTH`` body: which etcd auth mutation follows."""

    ENABLE = 1
    DISABLE = 2
    USER_ADD = 3
    USER_DELETE = 4
    USER_CHANGE_PASSWORD = 5
    USER_GRANT_ROLE = 6
    USER_REVOKE_ROLE = 7
    ROLE_ADD = 8
    ROLE_DELETE = 9
    ROLE_GRANT_PERMISSION = 10
    ROLE_REVOKE_PERMISSION = 11


def auth_body(kind: AuthOp, payload: bytes) -> bytes:
    """The ``Op.AUTH`` body for ``kind`` (``payload``: the request bytes, or the key at ENABLE)."""
    return bytes([int(kind)]) + payload


@dataclass(frozen=True, slots=True)
class Permission:
    """One key-range permission of a role, as etcd stores it (``range_end`` as sent)."""

    perm_type: int
    key: bytes
    range_end: bytes

    def to_pb(self) -> authpb.Permission:
        return authpb.Permission(
            permType=authpb.Permission.Type.Name(self.perm_type),
            key=self.key,
            range_end=self.range_end,
        )


@dataclass(slots=True)
class User:
    """A user: password hash ('' when none), sorted roles, and its credential revision.

    ``credential_revision`` is the auth revision at which the user was added
    or last changed its password; a token carries it, so a password change or
    a delete (and re-add) invalidates every token issued before.
    """

    name: str
    password: str
    roles: list[str]
    no_password: bool
    credential_revision: int

    def has_root_role(self) -> bool:
        i = bisect_left(self.roles, ROOT_ROLE)
        return i < len(self.roles) and self.roles[i] == ROOT_ROLE


@dataclass(slots=True)
class Role:
    """A role: its key-range permissions, sorted by key."""

    name: str
    permissions: list[Permission] = field(default_factory=list)


Interval = tuple[bytes, bytes | None]
"""A half-open key interval; ``None`` as the end is unbounded."""


def perm_interval(key: bytes, range_end: bytes) -> Interval:
    """The keys a permission (or a request) ``(key, range_end)`` covers, as etcd reads it."""
    if not range_end:
        return key, key + b"\x00"
    if range_end == FROM_KEY:
        return key, None
    return key, range_end


def _merge(intervals: list[Interval]) -> list[Interval]:
    """Union of intervals as disjoint, sorted, non-adjacent intervals (etcd's interval tree)."""
    merged: list[Interval] = []
    for start, end in sorted(intervals, key=lambda iv: iv[0]):
        if end is not None and end <= start:
            continue
        if merged:
            last_start, last_end = merged[-1]
            if last_end is None or start <= last_end:
                if last_end is not None and (end is None or end > last_end):
                    merged[-1] = (last_start, end)
                continue
        merged.append((start, end))
    return merged


@dataclass(slots=True)
class _Merged:
    """Disjoint sorted intervals and their starts (for bisection)."""

    intervals: list[Interval]
    starts: list[bytes]

    @staticmethod
    def of(intervals: list[Interval]) -> _Merged:
        merged = _merge(intervals)
        return _Merged(merged, [iv[0] for iv in merged])


def _covers(merged: _Merged, key: bytes, range_end: bytes) -> bool:
    """Whether the merged permission intervals cover every key of the request."""
    start, end = perm_interval(key, range_end)
    # The last interval starting at or before ``start`` (start + NUL is the next key).
    i = bisect_left(merged.starts, start + b"\x00") - 1
    if i < 0:
        return False
    lo, hi = merged.intervals[i]
    if lo > start:
        return False
    if hi is None:
        return True
    return end is not None and end <= hi and start < hi


@dataclass(slots=True)
class _UnifiedPerms:
    """A user's merged read and write intervals (etcd's ``unifiedRangePermissions``)."""

    read: _Merged
    write: _Merged


class AuthStore:
    """Users, roles, permissions, the enabled flag, the auth revision and the token key.

    Mutated only by :meth:`apply` (and :meth:`restore_from`); everything else
    reads. Invariants: user roles are sorted and unique; role permissions are
    sorted by key with unique ``(key, range_end)``; ``signing_key`` is set
    whenever ``enabled``.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.revision = 1
        """etcd's auth revision: 1 for a fresh store, +1 per change."""
        self.signing_key = b""
        """The HMAC key of auth tokens; drawn by the proposer at each AuthEnable."""
        self.users: dict[str, User] = {}
        self.roles: dict[str, Role] = {}
        self._perm_cache: dict[str, _UnifiedPerms] = {}

    # -- apply ------------------------------------------------------------------------------
    def apply(self, principal: str, body: bytes) -> object:
        """Apply one ``Op.AUTH`` body proposed by ``principal`` (None); raises an AuthError."""
        kind = AuthOp(body[0])
        payload = body[1:]
        # etcd's needAdminPermission: every auth mutation needs root while auth is on.
        self.check_admin(principal)
        self._perm_cache.clear()
        if kind == AuthOp.ENABLE:
            self._enable(payload)
        elif kind == AuthOp.DISABLE:
            if self.enabled:
                self.enabled = False
                self.revision += 1
        elif kind == AuthOp.USER_ADD:
            self._user_add(pb.AuthUserAddRequest.FromString(payload))
        elif kind == AuthOp.USER_DELETE:
            self._user_delete(pb.AuthUserDeleteRequest.FromString(payload).name)
        elif kind == AuthOp.USER_CHANGE_PASSWORD:
            self._user_change_password(pb.AuthUserChangePasswordRequest.FromString(payload))
        elif kind == AuthOp.USER_GRANT_ROLE:
            g = pb.AuthUserGrantRoleRequest.FromString(payload)
            self._user_grant_role(g.user, g.role)
        elif kind == AuthOp.USER_REVOKE_ROLE:
            r = pb.AuthUserRevokeRoleRequest.FromString(payload)
            self._user_revoke_role(r.name, r.role)
        elif kind == AuthOp.ROLE_ADD:
            self._role_add(pb.AuthRoleAddRequest.FromString(payload).name)
        elif kind == AuthOp.ROLE_DELETE:
            self._role_delete(pb.AuthRoleDeleteRequest.FromString(payload).role)
        elif kind == AuthOp.ROLE_GRANT_PERMISSION:
            self._role_grant(pb.AuthRoleGrantPermissionRequest.FromString(payload))
        elif kind == AuthOp.ROLE_REVOKE_PERMISSION:
            rp = pb.AuthRoleRevokePermissionRequest.FromString(payload)
            self._role_revoke(rp.role, rp.key, rp.range_end)
        return None

    def _enable(self, key: bytes) -> None:
        if self.enabled:
            return
        root = self.users.get(ROOT_USER)
        if root is None:
            raise RootUserNotExistError()
        if not root.has_root_role():
            raise RootRoleNotExistError()
        if len(key) != SIGNING_KEY_BYTES:
            raise ValueError("AuthEnable entry without a signing key")
        self.enabled = True
        self.signing_key = key

    def _user_add(self, r: pb.AuthUserAddRequest) -> None:
        if not r.name:
            raise UserEmptyError()
        if r.name in self.users:
            raise UserAlreadyExistError()
        no_password = r.HasField("options") and r.options.no_password
        self.revision += 1
        self.users[r.name] = User(
            r.name, "" if no_password else r.hashedPassword, [], no_password, self.revision
        )

    def _user_delete(self, name: str) -> None:
        if self.enabled and name == ROOT_USER:
            raise InvalidAuthMgmtError()
        if name not in self.users:
            raise UserNotFoundError()
        del self.users[name]
        self.revision += 1

    def _user_change_password(self, r: pb.AuthUserChangePasswordRequest) -> None:
        user = self.users.get(r.name)
        if user is None:
            raise UserNotFoundError()
        self.revision += 1
        if not user.no_password:
            user.password = r.hashedPassword
        user.credential_revision = self.revision

    def _user_grant_role(self, name: str, role: str) -> None:
        user = self.users.get(name)
        if user is None:
            raise UserNotFoundError()
        if role != ROOT_ROLE and role not in self.roles:
            raise RoleNotFoundError()
        i = bisect_left(user.roles, role)
        if i < len(user.roles) and user.roles[i] == role:
            return  # already granted: etcd ignores it (no revision bump)
        user.roles.insert(i, role)
        self.revision += 1

    def _user_revoke_role(self, name: str, role: str) -> None:
        if self.enabled and name == ROOT_USER and role == ROOT_ROLE:
            raise InvalidAuthMgmtError()
        user = self.users.get(name)
        if user is None:
            raise UserNotFoundError()
        if role not in user.roles:
            raise RoleNotGrantedError()
        user.roles.remove(role)
        self.revision += 1

    def _role_add(self, name: str) -> None:
        if not name:
            raise RoleEmptyError()
        if name in self.roles:
            raise RoleAlreadyExistError()
        self.roles[name] = Role(name)
        self.revision += 1

    def _role_delete(self, name: str) -> None:
        if self.enabled and name == ROOT_ROLE:
            raise InvalidAuthMgmtError()
        if name not in self.roles:
            raise RoleNotFoundError()
        del self.roles[name]
        for user in self.users.values():
            if name in user.roles:
                user.roles.remove(name)
        self.revision += 1

    def _role_grant(self, r: pb.AuthRoleGrantPermissionRequest) -> None:
        if not r.HasField("perm"):
            raise PermissionNotGivenError()
        role = self.roles.get(r.name)
        if role is None:
            raise RoleNotFoundError()
        perm = Permission(int(r.perm.permType), r.perm.key, r.perm.range_end)
        for i, old in enumerate(role.permissions):
            if old.key == perm.key and old.range_end == perm.range_end:
                role.permissions[i] = perm  # update the type of an existing permission
                break
        else:
            role.permissions.append(perm)
            role.permissions.sort(key=lambda p: p.key)  # stable, as etcd's small sort
        self.revision += 1

    def _role_revoke(self, name: str, key: bytes, range_end: bytes) -> None:
        role = self.roles.get(name)
        if role is None:
            raise RoleNotFoundError()
        kept = [p for p in role.permissions if p.key != key or p.range_end != range_end]
        if len(kept) == len(role.permissions):
            raise PermissionNotGrantedError()
        role.permissions = kept
        self.revision += 1

    # -- checks -----------------------------------------------------------------------------
    def check_admin(self, user: str) -> None:
        """etcd's ``IsAdminPermitted``: the user has the root role (anyone while auth is off)."""
        if not self.enabled:
            return
        if not user:
            raise UserEmptyError()
        u = self.users.get(user)
        if u is None:
            raise UserNotFoundError()
        if not u.has_root_role():
            raise PermissionDeniedError()

    def is_admin(self, user: str) -> bool:
        u = self.users.get(user)
        return u is not None and u.has_root_role()

    def check_permitted(self, user: str, key: bytes, range_end: bytes, perm_type: int) -> None:
        """etcd's ``isOpPermitted``: READ or WRITE on ``[key, range_end)`` for ``user``."""
        if not self.enabled:
            return
        if not user:
            raise UserEmptyError()
        u = self.users.get(user)
        if u is None:
            raise PermissionDeniedError()
        if u.has_root_role():
            return
        perms = self._perm_cache.get(user)
        if perms is None:
            perms = self._merged_perms(u)
            self._perm_cache[user] = perms
        merged = perms.read if perm_type == READ else perms.write
        if not _covers(merged, key, range_end):
            raise PermissionDeniedError()

    def _merged_perms(self, user: User) -> _UnifiedPerms:
        read: list[Interval] = []
        write: list[Interval] = []
        for name in user.roles:
            role = self.roles.get(name)
            if role is None:
                continue
            for p in role.permissions:
                iv = perm_interval(p.key, p.range_end)
                if p.perm_type in (READ, READWRITE):
                    read.append(iv)
                if p.perm_type in (WRITE, READWRITE):
                    write.append(iv)
        return _UnifiedPerms(_Merged.of(read), _Merged.of(write))

    # -- reads ------------------------------------------------------------------------------
    def user_names(self) -> list[str]:
        return sorted(self.users)

    def role_names(self) -> list[str]:
        return sorted(self.roles)

    # -- snapshot ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole store, deterministically encoded (sorted keys, base64 for bytes)."""
        b64 = base64.b64encode
        doc: dict[str, Any] = {
            "format": _STORE_FORMAT,
            "enabled": self.enabled,
            "revision": self.revision,
            "signing_key": b64(self.signing_key).decode(),
            "users": [
                [u.name, u.password, u.roles, u.no_password, u.credential_revision]
                for u in (self.users[n] for n in sorted(self.users))
            ],
            "roles": [
                [r.name, [[p.perm_type, b64(p.key).decode(), b64(p.range_end).decode()]
                          for p in r.permissions]]
                for r in (self.roles[n] for n in sorted(self.roles))
            ],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def from_bytes(data: bytes) -> AuthStore:
        doc = json.loads(data)
        if doc.get("format") != _STORE_FORMAT:
            raise ValueError(f"unknown auth store format {doc.get('format')!r}")
        b64d = base64.b64decode
        store = AuthStore()
        store.enabled = bool(doc["enabled"])
        store.revision = int(doc["revision"])
        store.signing_key = b64d(doc["signing_key"])
        for name, password, roles, no_password, cred_rev in doc["users"]:
            store.users[name] = User(name, password, list(roles), bool(no_password), int(cred_rev))
        for name, perms in doc["roles"]:
            store.roles[name] = Role(
                name, [Permission(int(t), b64d(k), b64d(e)) for t, k, e in perms]
            )
        return store
