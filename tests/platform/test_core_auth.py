"""The core's own door: the platform reaches a core with etcd-style auth enabled as its own core user.

A one-member core (its own: auth cannot be switched on for the shared
cluster) is set up exactly as docs/access-control.md tells an operator to,
with the real etcdctl: a root user, a ``flagstaff-platform`` role with
read-write on every key, a ``flagstaff`` user holding it, ``auth enable``.
The platform, given ``FLAGSTAFF_CORE_USER``/``FLAGSTAFF_CORE_PASSWORD``, then
serves the REST API and live reads as usual; without credentials, or with a
wrong password, it is refused; etcdctl without a user is refused too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from flags.core import core, reset_core
from flags.exceptions import FlagstaffError
from tests.cluster.harness import Cluster, ProcessRegistry

ETCDCTL = "/usr/bin/etcdctl"
PLATFORM_PASSWORD = "platform-secret"


def etcdctl(endpoints: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ETCDCTL, f"--endpoints={endpoints}", "--command-timeout=10s", *args],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "ETCDCTL_API": "3"})


def ok(endpoints: str, *args: str) -> str:
    done = etcdctl(endpoints, *args)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def auth_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-member core with auth enabled as the deploy docs say; its endpoint."""
    registry = ProcessRegistry()
    cluster = Cluster(Path(tmp_path_factory.mktemp("auth-core")), registry, 1, [])
    try:
        cluster.start()
        cluster.wait_for_leader(timeout=30)
        endpoints = cluster.endpoints
        # The commands of docs/access-control.md, "The core's own door".
        ok(endpoints, "user", "add", "root", "--new-user-password=root-secret")
        ok(endpoints, "role", "add", "flagstaff-platform")
        ok(endpoints, "role", "grant-permission", "flagstaff-platform", "readwrite", "--from-key",
           "")
        ok(endpoints, "user", "add", "flagstaff", f"--new-user-password={PLATFORM_PASSWORD}")
        ok(endpoints, "user", "grant-role", "flagstaff", "flagstaff-platform")
        ok(endpoints, "auth", "enable")
        yield endpoints
    finally:
        registry.kill_all()
        for node in cluster.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)


@pytest.fixture
def platform_on(auth_core: str, settings: Any) -> Iterator[Any]:
    """Point the platform's gateway at the auth-enabled core (restored after the test)."""
    settings.FLAGSTAFF_ENDPOINTS = [auth_core]
    settings.FLAGSTAFF_CORE_TIMEOUT = 5.0
    yield settings
    reset_core()


def test_platform_works_as_its_core_user(platform_on: Any, auth_core: str, user: Any) -> None:
    platform_on.FLAGSTAFF_CORE_USER = "flagstaff"
    platform_on.FLAGSTAFF_CORE_PASSWORD = PLATFORM_PASSWORD
    client = APIClient()
    client.force_authenticate(user)
    created = client.post("/api/v1/projects/", {"key": "authed", "name": "Behind auth"},
                          format="json")
    assert created.status_code == 201, created.content
    assert client.get("/api/v1/projects/authed/").json()["name"] == "Behind auth"
    # The change is in the core, readable by an authorised core user...
    stored = ok(auth_core, "--user", "root:root-secret", "get", "/projects/authed",
                "--print-value-only")
    assert "Behind auth" in stored
    # ...and not by an anonymous etcdctl.
    refused = etcdctl(auth_core, "get", "/projects/authed")
    assert refused.returncode != 0


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_platform_without_valid_core_credentials_is_refused(
        platform_on: Any, password: str | None) -> None:
    platform_on.FLAGSTAFF_CORE_USER = "flagstaff" if password else None
    platform_on.FLAGSTAFF_CORE_PASSWORD = password
    with pytest.raises(FlagstaffError):
        core().list("/projects/")


@pytest.fixture
def as_core_user(platform_on: Any) -> Any:
    """The platform on the auth-enabled core with its credentials (sync: settings reset the gateway)."""
    platform_on.FLAGSTAFF_CORE_USER = "flagstaff"
    platform_on.FLAGSTAFF_CORE_PASSWORD = PLATFORM_PASSWORD
    platform_on.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return platform_on


@pytest.mark.django_db(transaction=True)
async def test_live_updates_work_as_the_core_user(as_core_user: Any, user: Any) -> None:
    """The relay's watch and the websocket snapshot go through the same credentials."""
    import contextlib
    import time

    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.db import connections
    from django.test import Client
    from flagstaff_platform.asgi import application
    from platform_support import boolean_flag

    from flags.live.relay import stop_relay

    api = APIClient()
    api.force_authenticate(user)

    def prepare() -> str:
        assert api.post("/api/v1/projects/", {"key": "live-authed", "name": "Live", "environments": [
            {"key": "production", "name": "Production"}]}, format="json").status_code == 201
        assert api.post("/api/v1/projects/live-authed/flags/", {"document": boolean_flag("f")},
                        format="json").status_code == 201
        browser = Client()
        browser.force_login(user)
        return f"sessionid={browser.cookies['sessionid'].value}"

    cookie = await sync_to_async(prepare)()
    ws = WebsocketCommunicator(application, "/ws/v1/flags/", headers=[
        (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
    try:
        assert (await ws.connect(timeout=10))[0]
        await ws.send_json_to({"type": "subscribe", "project": "live-authed",
                               "environment": "production"})
        deadline = time.monotonic() + 10

        async def next_message() -> dict[str, Any]:
            while True:
                message: dict[str, Any] = await ws.receive_json_from(
                    timeout=max(0.01, deadline - time.monotonic()))
                if message["type"] != "heartbeat":
                    return message

        snapshot = await next_message()
        assert snapshot["type"] == "snapshot" and set(snapshot["flags"]) == {"f"}, snapshot
        assert (await next_message())["type"] == "subscribed"
        toggled = await sync_to_async(api.post)(
            "/api/v1/projects/live-authed/environments/production/flags/f/toggle/", {"on": True},
            format="json")
        assert toggled.status_code == 200
        event = await next_message()
        assert event["type"] == "event" and event["changes"][0]["doc"]["on"] is True
    finally:
        with contextlib.suppress(Exception):
            await ws.disconnect(timeout=10)
        await stop_relay()
        await core().aclose()
        await sync_to_async(connections.close_all)()
