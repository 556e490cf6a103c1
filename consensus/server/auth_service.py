"""The etcd ``Auth`` service: enable/disable, authenticate, users, roles and permissions.

Mutations are replicated (``Op.AUTH`` entries applied by ``AuthStore``):
the proposer first checks the caller (root while auth is on: a fast refusal;
apply checks again at the entry's log position), hashes a new password with
scrypt in a worker thread and draws the token signing key at AuthEnable, so
that apply stays deterministic and fast and no plaintext password is ever
written to the log. Reads (UserGet/List, RoleGet/List, AuthStatus) and
Authenticate are served from the local store after a linearizable barrier.
"""

from __future__ import annotations

import asyncio
import os

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc as pb_grpc
from consensus.server import auth_tokens
from consensus.server.auth_store import (
    SIGNING_KEY_BYTES,
    AuthError,
    AuthFailedError,
    AuthNotEnabledError,
    AuthOp,
    AuthStore,
    RoleNotFoundError,
    UserEmptyError,
    UserNotFoundError,
    auth_body,
    hash_password,
    verify_password,
)
from consensus.server.authorization import Need, authorize
from consensus.server.etcd_server import EtcdServer, unary
from consensus.server.internal_request import Op

_AUTHENTICATE_ATTEMPTS = 3
"""Password checks retried when the user's credentials changed during one (etcd retries too)."""


class AuthService(pb_grpc.AuthServicer):
    """etcdserverpb.Auth on top of one member."""

    def __init__(self, server: EtcdServer, token_ttl: int = auth_tokens.DEFAULT_TOKEN_TTL) -> None:
        self.s = server
        self.token_ttl = token_ttl

    @property
    def store(self) -> AuthStore:
        store: AuthStore = self.s.fsm.auth
        return store

    async def _mutate(self, context: grpc.aio.ServicerContext, kind: AuthOp, payload: bytes) -> None:
        await self.s.propose(Op.AUTH, auth_body(kind, payload), context)

    def _admin(self, context: grpc.aio.ServicerContext) -> str:
        self.s.check_has_leader(context)
        return authorize(self.s, context, Need.ADMIN)

    # -- enable / disable / status ----------------------------------------------------------
    @unary
    async def AuthEnable(
        self, request: pb.AuthEnableRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthEnableResponse:
        self._admin(context)
        await self._mutate(context, AuthOp.ENABLE, os.urandom(SIGNING_KEY_BYTES))
        return pb.AuthEnableResponse(header=self.s.header())

    @unary
    async def AuthDisable(
        self, request: pb.AuthDisableRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthDisableResponse:
        self._admin(context)
        await self._mutate(context, AuthOp.DISABLE, request.SerializeToString())
        return pb.AuthDisableResponse(header=self.s.header())

    @unary
    async def AuthStatus(
        self, request: pb.AuthStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthStatusResponse:
        self.s.check_has_leader(context)
        await self.s.linearizable_barrier()
        authorize(self.s, context, Need.ADMIN)
        return pb.AuthStatusResponse(
            header=self.s.header(), enabled=self.store.enabled, authRevision=self.store.revision
        )

    # -- authenticate -----------------------------------------------------------------------
    @unary
    async def Authenticate(
        self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateResponse:
        self.s.check_has_leader(context)
        await self.s.linearizable_barrier()
        for _ in range(_AUTHENTICATE_ATTEMPTS):
            store = self.store
            if not store.enabled:
                raise AuthNotEnabledError()
            user = store.users.get(request.name)
            if user is None or user.no_password:
                raise AuthFailedError()
            checked = user.credential_revision
            if not await asyncio.to_thread(verify_password, request.password, user.password):
                raise AuthFailedError()
            # The check took a while: the credentials it checked must still be current.
            store = self.store
            now_user = store.users.get(request.name)
            if store.enabled and now_user is not None and now_user.credential_revision == checked:
                token = auth_tokens.issue(store, request.name, self.token_ttl)
                return pb.AuthenticateResponse(header=self.s.header(), token=token)
        raise AuthFailedError()

    # -- users ------------------------------------------------------------------------------
    @unary
    async def UserAdd(
        self, request: pb.AuthUserAddRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthUserAddResponse:
        self._admin(context)
        if not request.name:
            raise UserEmptyError()
        out = pb.AuthUserAddRequest(name=request.name)
        if request.HasField("options"):
            out.options.CopyFrom(request.options)
        if not request.options.no_password:
            # A client-sent hashedPassword is ignored, as etcd 3.5 ignores it.
            out.hashedPassword = await asyncio.to_thread(hash_password, request.password)
        await self._mutate(context, AuthOp.USER_ADD, out.SerializeToString())
        return pb.AuthUserAddResponse(header=self.s.header())

    @unary
    async def UserGet(
        self, request: pb.AuthUserGetRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthUserGetResponse:
        self.s.check_has_leader(context)
        await self.s.linearizable_barrier()
        caller = authorize(self.s, context, Need.ANY)
        try:
            self.store.check_admin(caller)
        except AuthError:
            if request.name != caller:  # a user may read itself (etcd's authApplierV3.UserGet)
                raise
        user = self.store.users.get(request.name)
        if user is None:
            raise UserNotFoundError()
        return pb.AuthUserGetResponse(header=self.s.header(), roles=user.roles)

    @unary
    async def UserList(
        self, request: pb.AuthUserListRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthUserListResponse:
        self.s.check_has_leader(context)
        await self.s.linearizable_barrier()
        authorize(self.s, context, Need.ADMIN)
        return pb.AuthUserListResponse(header=self.s.header(), users=self.store.user_names())

    @unary
    async def UserDelete(
        self, request: pb.AuthUserDeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthUserDeleteResponse:
        self._admin(context)
        await self._mutate(context, AuthOp.USER_DELETE, request.SerializeToString())
        return pb.AuthUserDeleteResponse(header=self.s.header())

    @unary
    async def UserChangePassword(
        self, request: pb.AuthUserChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthUserChangePasswordResponse:
        self._admin(context)
        hashed = await asyncio.to_thread(hash_password, request.password)
        out = pb.AuthUserChangePasswordRequest(name=request.name, hashedPassword=hashed)
        await self._mutate(context, AuthOp.USER_CHANGE_PASSWORD, out.SerializeToString())
        return pb.AuthUserChangePasswordResponse(header=self.s.header())

    @unary
    async def UserGrantRole(
        self, request: pb.AuthUserGrantRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthUserGrantRoleResponse:
        self._admin(context)
        await self._mutate(context, AuthOp.USER_GRANT_ROLE, request.SerializeToString())
        return pb.AuthUserGrantRoleResponse(header=self.s.header())

    @unary
    async def UserRevokeRole(
        self, request: pb.AuthUserRevokeRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthUserRevokeRoleResponse:
        self._admin(context)
        await self._mutate(context, AuthOp.USER_REVOKE_ROLE, request.SerializeToString())
        return pb.AuthUserRevokeRoleResponse(header=self.s.header())

    # -- roles ------------------------------------------------------------------------------
    @unary
    async def RoleAdd(
        self, request: pb.AuthRoleAddRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthRoleAddResponse:
        self._admin(context)
        await self._mutate(context, AuthOp.ROLE_ADD, request.SerializeToString())
        return pb.AuthRoleAddResponse(header=self.s.header())

    @unary
    async def RoleGet(
        self, request: pb.AuthRoleGetRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthRoleGetResponse:
        self.s.check_has_leader(context)
        await self.s.linearizable_barrier()
        caller = authorize(self.s, context, Need.ANY)
        try:
            self.store.check_admin(caller)
        except AuthError:
            holder = self.store.users.get(caller)
            if holder is None or request.role not in holder.roles:  # a holder may read it
                raise
        role = self.store.roles.get(request.role)
        if role is None:
            raise RoleNotFoundError()
        return pb.AuthRoleGetResponse(
            header=self.s.header(), perm=[p.to_pb() for p in role.permissions]
        )

    @unary
    async def RoleList(
        self, request: pb.AuthRoleListRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthRoleListResponse:
        self.s.check_has_leader(context)
        await self.s.linearizable_barrier()
        authorize(self.s, context, Need.ADMIN)
        return pb.AuthRoleListResponse(header=self.s.header(), roles=self.store.role_names())

    @unary
    async def RoleDelete(
        self, request: pb.AuthRoleDeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthRoleDeleteResponse:
        self._admin(context)
        await self._mutate(context, AuthOp.ROLE_DELETE, request.SerializeToString())
        return pb.AuthRoleDeleteResponse(header=self.s.header())

    @unary
    async def RoleGrantPermission(
        self, request: pb.AuthRoleGrantPermissionRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthRoleGrantPermissionResponse:
        self._admin(context)
        await self._mutate(context, AuthOp.ROLE_GRANT_PERMISSION, request.SerializeToString())
        return pb.AuthRoleGrantPermissionResponse(header=self.s.header())

    @unary
    async def RoleRevokePermission(
        self, request: pb.AuthRoleRevokePermissionRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthRoleRevokePermissionResponse:
        self._admin(context)
        await self._mutate(context, AuthOp.ROLE_REVOKE_PERMISSION, request.SerializeToString())
        return pb.AuthRoleRevokePermissionResponse(header=self.s.header())


def register(server: EtcdServer, token_ttl: int = auth_tokens.DEFAULT_TOKEN_TTL) -> AuthService:
    service = AuthService(server, token_ttl)
    server.add_service(pb_grpc.add_AuthServicer_to_server, service)
    return service
