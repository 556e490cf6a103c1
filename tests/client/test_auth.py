"""Auth calls and token handling of ``consensus.client`` against a private real etcd."""

from __future__ import annotations

import asyncio

import pytest

from consensus.api.gen.etcd.authpb import auth_pb2
from consensus.client import AuthError, Client, PermissionDeniedError
from consensus.client.errors import (
    AuthFailedError,
    RoleNotFoundError,
    UnimplementedError,
    UserExistsError,
)
from tests.etcd_process import EtcdCluster


async def auth_enabled(client: Client) -> bool | None:
    """AuthStatus's answer, or None on etcd 3.4 (the RPC arrived in 3.5)."""
    try:
        return (await client.auth_status()).enabled
    except UnimplementedError:
        return None


async def enable_auth(admin: Client) -> None:
    await admin.user_add("root", "rootpw")
    await admin.user_grant_role("root", "root")
    await admin.role_add("app-role")
    await admin.role_grant_permission("app-role", "/app/", "/app0", "readwrite")
    await admin.role_grant_permission("app-role", "/shared", perm="read")
    await admin.user_add("app", "apppw")
    await admin.user_grant_role("app", "app-role")
    await admin.auth_enable()


async def test_user_and_role_management(fresh_etcd: EtcdCluster) -> None:
    async with Client(fresh_etcd.endpoints) as admin:
        await enable_auth(admin)
        async with Client(fresh_etcd.endpoints, username="root", password="rootpw") as root:
            assert await auth_enabled(root) in (True, None)
            assert sorted((await root.user_list()).users) == ["app", "root"]
            assert list((await root.user_get("app")).roles) == ["app-role"]
            assert "app-role" in (await root.role_list()).roles
            perms = {(p.key, p.range_end, p.permType) for p in (await root.role_get("app-role")).perm}
            assert perms == {
                (b"/app/", b"/app0", auth_pb2.Permission.READWRITE),
                (b"/shared", b"", auth_pb2.Permission.READ),
            }
            with pytest.raises(UserExistsError):
                await root.user_add("app", "x")
            await root.role_revoke_permission("app-role", "/shared")
            assert len((await root.role_get("app-role")).perm) == 1
            await root.user_revoke_role("app", "app-role")
            assert list((await root.user_get("app")).roles) == []
            await root.user_delete("app")
            await root.role_delete("app-role")
            with pytest.raises(RoleNotFoundError):
                await root.role_get("app-role")
            token = (await root.authenticate("root", "rootpw")).token
            assert token
            await root.auth_disable()
        assert await auth_enabled(admin) in (False, None)
        await admin.put("/open-again", "v")


async def test_credentials_token_and_permissions(fresh_etcd: EtcdCluster) -> None:
    async with Client(fresh_etcd.endpoints) as admin:
        await enable_auth(admin)
        with pytest.raises(AuthError):  # auth is on now: no token, no user
            await admin.put("/app/x", "v")

    async with Client(fresh_etcd.endpoints, username="app", password="wrong") as bad:
        with pytest.raises(AuthFailedError):
            await bad.get("/app/x")
        with pytest.raises(AuthFailedError):  # a watch gives up too, rather than retry forever
            await asyncio.wait_for(bad.watch("/app/x").__anext__(), 5)

    async with (
        Client(fresh_etcd.endpoints, username="root", password="rootpw") as root,
        Client(fresh_etcd.endpoints, username="app", password="apppw") as app,
    ):
        await app.put("/app/x", "1")
        assert app.authentications == 1
        with pytest.raises(PermissionDeniedError):
            await app.put("/other", "v")
        with pytest.raises(PermissionDeniedError):
            await app.put("/shared", "v")  # read-only

        # Changing the password (to the same one) invalidates the user's tokens:
        # the next call is refused with "invalid auth token", re-authenticates once
        # and succeeds.
        await root.user_change_password("app", "apppw")
        kv = await app.get("/app/x")
        assert kv is not None and kv.value == b"1"
        assert app.authentications == 2

        # Watches carry the token too; a watch opened with a stale token is
        # retried once with a fresh one.
        await root.user_change_password("app", "apppw")
        async with app.watch("/app/", "/app0") as watch:
            await root.put("/app/y", "2")
            batch = await asyncio.wait_for(watch.__anext__(), 5)
        assert batch.events[0].kv.value == b"2"
        assert app.authentications == 3

        forbidden = app.watch("/other")
        with pytest.raises(PermissionDeniedError):
            await asyncio.wait_for(forbidden.__anext__(), 5)
