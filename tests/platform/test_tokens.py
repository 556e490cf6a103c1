"""API tokens through their doors: REST (``Authorization: Bearer``) and the live websocket (``?key=``).

Each kind is held to its scope and its read/write right; revoked, expired and
unknown secrets are refused; a token never carries more than its creator;
the secret is shown once and never listed. Everything runs against the real
core cluster and Postgres (``conftest.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.utils import timezone
from flagstaff_platform.asgi import application
from platform_support import boolean_flag
from rest_framework.test import APIClient

from flags.core import core
from flags.live.consumers import CLOSE_UNAUTHENTICATED
from flags.live.relay import stop_relay
from flags.tokens import ApiToken, TokenKind, authenticate_token, do_create_token, do_revoke_token

DEADLINE = 10.0


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def flag_url(project: str, environment: str = "production", flag: str = "new-checkout") -> str:
    return f"/api/v1/projects/{project}/environments/{environment}/flags/{flag}/"


@pytest.fixture
def second_project(api: APIClient, new_key: Callable[[str], str]) -> str:
    key = new_key("q")
    response = api.post("/api/v1/projects/", {
        "key": key, "name": key, "environments": [{"key": "production", "name": "Production"}],
    }, format="json")
    assert response.status_code == 201, response.content
    assert api.post(f"/api/v1/projects/{key}/flags/", {"document": boolean_flag("other-flag")},
                    format="json").status_code == 201
    return key


def make(user: Any, kind: TokenKind, scope: str, **kwargs: Any) -> tuple[ApiToken, str]:
    return do_create_token(created_by=user, name=f"{kind.value} test", kind=kind, scope=scope,
                           **kwargs)


# -- REST -----------------------------------------------------------------------------------


def test_secret_is_shown_once_and_stored_hashed(api: APIClient, user: Any) -> None:
    session = APIClient()
    session.force_authenticate(user)
    created = session.post("/api/v1/tokens/", {"name": "ci", "kind": "automation",
                                               "scope": "/config/", "can_write": True},
                           format="json")
    assert created.status_code == 201, created.content
    secret = created.json()["secret"]
    assert secret.startswith("fs_automation_") and len(secret) > 40
    listed = session.get("/api/v1/tokens/")
    assert listed.status_code == 200
    assert secret not in listed.content.decode()
    row = next(t for t in listed.json() if t["id"] == created.json()["id"])
    assert row["display_prefix"] == secret[:len("fs_automation_") + 6]
    assert row["last_used_at"] is None
    assert not ApiToken.objects.filter(secret_hash=secret).exists()
    assert bearer(secret).get("/api/v1/config/").status_code == 200
    assert session.get(f"/api/v1/tokens/{row['id']}/").json()["last_used_at"] is not None


def test_unauthenticated_and_unknown_tokens_get_401(core_cluster: Any, db: Any) -> None:
    response = APIClient().get("/api/v1/projects/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert bearer("fs_automation_not-a-real-secret").get("/api/v1/projects/").status_code == 401


def test_read_only_automation_token_reads_but_cannot_write(
        user: Any, project: str, flag: str) -> None:
    _, secret = make(user, TokenKind.AUTOMATION, f"/flags/{project}/")
    client = bearer(secret)
    assert client.get(flag_url(project)).status_code == 200
    refused = client.post(flag_url(project) + "toggle/", {"on": True}, format="json")
    assert refused.status_code == 403
    assert client.get(flag_url(project)).json()["document"]["on"] is False


def test_write_token_changes_only_inside_its_scope(
        user: Any, project: str, flag: str, second_project: str) -> None:
    _, secret = make(user, TokenKind.AUTOMATION, f"/flags/{project}/production/", can_write=True)
    client = bearer(secret)
    toggled = client.post(flag_url(project) + "toggle/", {"on": True}, format="json")
    assert toggled.status_code == 200, toggled.content
    # Outside the scope: not even visible.
    assert client.get(flag_url(project, "staging")).status_code == 404
    assert client.post(flag_url(project, "staging") + "toggle/", {"on": True},
                       format="json").status_code == 404
    assert client.get(flag_url(second_project, flag="other-flag")).status_code == 404
    names = [p["key"] for p in client.get("/api/v1/projects/").json()]
    assert project in names and second_project not in names
    flags = client.get(f"/api/v1/projects/{second_project}/flags/")
    assert flags.status_code == 404


def test_sdk_key_reads_its_environment_and_is_read_only(
        user: Any, project: str, flag: str) -> None:
    token, secret = make(user, TokenKind.SDK, f"{project}/production")
    assert token.environment == (project, "production")
    client = bearer(secret)
    assert client.get(flag_url(project)).status_code == 200
    assert client.get(flag_url(project, "staging")).status_code == 404
    assert client.post(flag_url(project) + "toggle/", {"on": True},
                       format="json").status_code == 403
    with pytest.raises(Exception, match="read-only"):
        make(user, TokenKind.SDK, f"{project}/production", can_write=True)


def test_browser_key_never_reads_rules(user: Any, project: str, flag: str) -> None:
    _, secret = make(user, TokenKind.BROWSER, f"{project}/production")
    client = bearer(secret)
    assert client.get(flag_url(project)).status_code == 404
    assert client.get(f"/api/v1/projects/{project}/environments/production/segments/"
                      ).status_code == 404
    with pytest.raises(Exception, match="one environment"):
        make(user, TokenKind.BROWSER, "/flags/")


def test_service_token_scope_is_service_names(user: Any, db: Any) -> None:
    token, _ = make(user, TokenKind.SERVICE, "payments", can_write=True)
    from flags.permissions import Perm, has_permission

    assert has_permission(token, Perm.WRITE, "/services/payments/i-1")
    assert not has_permission(token, Perm.READ, "/services/billing/i-1")
    assert not has_permission(token, Perm.READ, "/flags/")
    with pytest.raises(Exception, match="service"):
        make(user, TokenKind.SERVICE, "/flags/")


def test_revoked_and_expired_tokens_are_refused(user: Any, project: str) -> None:
    token, secret = make(user, TokenKind.AUTOMATION, "/", can_write=True)
    client = bearer(secret)
    assert client.get(f"/api/v1/projects/{project}/").status_code == 200
    session = APIClient()
    session.force_authenticate(user)
    assert session.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    assert client.get(f"/api/v1/projects/{project}/").status_code == 401
    assert authenticate_token(secret) is None

    expiring, secret = make(user, TokenKind.AUTOMATION, "/",
                            expires_at=timezone.now() + timedelta(hours=1))
    assert bearer(secret).get(f"/api/v1/projects/{project}/").status_code == 200
    ApiToken.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert bearer(secret).get(f"/api/v1/projects/{project}/").status_code == 401
    with pytest.raises(Exception, match="future"):
        make(user, TokenKind.AUTOMATION, "/", expires_at=timezone.now() - timedelta(seconds=1))


def test_a_deactivated_creators_tokens_stop_working(user: Any, project: str) -> None:
    _, secret = make(user, TokenKind.AUTOMATION, "/")
    assert bearer(secret).get(f"/api/v1/projects/{project}/").status_code == 200
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert bearer(secret).get(f"/api/v1/projects/{project}/").status_code == 401


def test_kind_filter_and_tokens_cannot_mint_tokens(user: Any, project: str) -> None:
    _, secret = make(user, TokenKind.AUTOMATION, "/", can_write=True)
    assert authenticate_token(secret, kinds=[TokenKind.SDK]) is None
    assert authenticate_token(secret, kinds=[TokenKind.AUTOMATION]) is not None
    minted = bearer(secret).post("/api/v1/tokens/", {"name": "x", "kind": "automation",
                                                     "scope": "/"}, format="json")
    assert minted.status_code == 403


def test_people_see_and_revoke_only_their_own_tokens(user: Any, db: Any, core_cluster: Any) -> None:
    from django.contrib.auth import get_user_model

    token, _ = make(user, TokenKind.AUTOMATION, "/config/")
    mallory = get_user_model().objects.create_user("mallory", password="mallory-password")
    session = APIClient()
    session.force_authenticate(mallory)
    assert all(t["id"] != token.pk for t in session.get("/api/v1/tokens/").json())
    assert session.delete(f"/api/v1/tokens/{token.pk}/").status_code == 404
    with pytest.raises(Exception, match="no such token"):
        do_revoke_token(token, by=mallory)
    token.refresh_from_db()
    assert token.is_active


# -- websockets -----------------------------------------------------------------------------

pytest_websocket = pytest.mark.django_db(transaction=True)


@pytest.fixture
def memory_layer(settings: Any) -> None:
    """The in-memory Channels layer (sync: settings changes reset the core gateway)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.FLAGSTAFF_LIVE_HEARTBEAT_SECONDS = 30.0


@pytest.fixture
async def ws_open(memory_layer: None, core_cluster: Any) -> AsyncIterator[Callable[..., Awaitable[
        WebsocketCommunicator]]]:
    opened: list[WebsocketCommunicator] = []

    async def open_socket(path: str, headers: list[tuple[bytes, bytes]] | None = None,
                          expect_accept: bool = True) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(application, path, headers=[
            (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), *(headers or [])])
        opened.append(communicator)
        connected, code = await communicator.connect(timeout=DEADLINE)
        assert connected is expect_accept, code
        if not expect_accept:
            assert code == CLOSE_UNAUTHENTICATED
        return communicator

    yield open_socket
    for communicator in opened:
        with contextlib.suppress(Exception):
            await communicator.disconnect(timeout=DEADLINE)
    await stop_relay()
    await core().aclose()
    await sync_to_async(connections.close_all)()


async def next_message(ws: WebsocketCommunicator) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no message before the deadline"
        message: dict[str, Any] = await ws.receive_json_from(timeout=remaining)
        if message["type"] != "heartbeat":
            return message


async def subscribe(ws: WebsocketCommunicator, project: str, environment: str) -> dict[str, Any]:
    """Subscribe; the ``subscribed`` message, or the ``error``."""
    await ws.send_json_to({"type": "subscribe", "project": project, "environment": environment})
    while True:
        message = await next_message(ws)
        if message["type"] in ("subscribed", "error"):
            return message


@pytest_websocket
async def test_sdk_key_on_the_websocket_follows_only_its_environment(
        ws_open: Any, user: Any, project: str, flag: str) -> None:
    _, secret = await sync_to_async(make)(user, TokenKind.SDK, f"{project}/production")
    ws = await ws_open(f"/ws/v1/flags/?key={secret}")
    assert (await subscribe(ws, project, "production"))["type"] == "subscribed"
    refused = await subscribe(ws, project, "staging")
    assert refused["type"] == "error" and refused["code"] == "not_found"
    by_header = await ws_open("/ws/v1/flags/", [(b"authorization", f"Bearer {secret}".encode())])
    assert (await subscribe(by_header, project, "production"))["type"] == "subscribed"


@pytest_websocket
async def test_bad_or_browser_keys_on_the_websocket(
        ws_open: Any, user: Any, project: str, flag: str) -> None:
    await ws_open("/ws/v1/flags/?key=fs_sdk_unknown", expect_accept=False)
    _, browser = await sync_to_async(make)(user, TokenKind.BROWSER, f"{project}/production")
    ws = await ws_open(f"/ws/v1/flags/?key={browser}")
    refused = await subscribe(ws, project, "production")
    assert refused["type"] == "error" and refused["code"] == "not_found"


@pytest_websocket
async def test_revoking_a_token_closes_its_open_websocket(
        ws_open: Any, user: Any, project: str, flag: str) -> None:
    token, secret = await sync_to_async(make)(user, TokenKind.SDK, f"{project}/production")
    ws = await ws_open(f"/ws/v1/flags/?key={secret}")
    assert (await subscribe(ws, project, "production"))["type"] == "subscribed"
    await sync_to_async(do_revoke_token)(token, by=user)
    deadline = time.monotonic() + DEADLINE
    while True:
        assert time.monotonic() < deadline, "the socket stayed open"
        output = await ws.receive_output(timeout=deadline - time.monotonic())
        if output["type"] == "websocket.close":
            assert output["code"] == CLOSE_UNAUTHENTICATED
            break
