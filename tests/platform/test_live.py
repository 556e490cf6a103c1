"""The live-updates websocket against the real ASGI app, a real core, and both Channels layers.

Each test runs twice: on the in-memory layer and on Redis (``channels_redis``,
a prefix of its own). Clients are Channels' ``WebsocketCommunicator`` through
the whole ASGI stack (origin check, session auth, routing); saves go through
the REST API; every wait polls ``receive_json_from`` against a deadline.
The latency test prints p50/p99 of save -> event over 50 saves (``pytest -s``)
and asserts no timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client as DjangoClient
from flagstaff_platform.asgi import application
from rest_framework.test import APIClient

from flags.core import core
from flags.live.consumers import CLOSE_UNAUTHENTICATED
from flags.live.relay import Relay, get_relay, stop_relay

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE = 10.0
SAVES = 50
REDIS_URL = "redis://127.0.0.1:6379/0"
Connect = Callable[..., Awaitable[WebsocketCommunicator]]


@pytest.fixture(params=["memory", "redis"])
def channel_layer(request: pytest.FixtureRequest, settings: Any) -> str:
    """The Channels layer the test runs on (settings changes reset channels' layer cache)."""
    if request.param == "redis":
        settings.CHANNEL_LAYERS = {"default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"flagstaff-test-{uuid.uuid4().hex[:8]}"},
        }}
    else:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.FLAGSTAFF_LIVE_HEARTBEAT_SECONDS = 30.0
    return str(request.param)


@pytest.fixture(autouse=True)
async def close_thread_connections() -> AsyncIterator[None]:
    """Close the database connection of the sync_to_async thread (else the test DB cannot be dropped)."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def session_cookie(user: Any) -> str:
    """alice's session cookie (``sessionid=...``), as a logged-in browser sends it."""
    client = DjangoClient()
    assert client.login(username="alice", password="alice-password")
    return f"sessionid={client.cookies['sessionid'].value}"


@pytest.fixture
async def connect(channel_layer: str, session_cookie: str, core_cluster: Any,
                  ) -> AsyncIterator[Connect]:
    """Open websockets to ``/ws/v1/flags/`` (alice's by default); all closed, relay stopped after."""
    opened: list[WebsocketCommunicator] = []

    async def open_socket(cookie: str | None = session_cookie,
                          expect_accept: bool = True) -> WebsocketCommunicator:
        headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
        if cookie is not None:
            headers.append((b"cookie", cookie.encode()))
        communicator = WebsocketCommunicator(application, "/ws/v1/flags/", headers=headers)
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=DEADLINE)
        assert connected is expect_accept
        return communicator

    yield open_socket
    for communicator in opened:
        with contextlib.suppress(Exception):  # already closed by the server or the test
            await communicator.disconnect(timeout=DEADLINE)
    await stop_relay()
    await core().aclose()


async def next_message(communicator: WebsocketCommunicator, *,
                       skip: tuple[str, ...] = ("heartbeat",)) -> dict[str, Any]:
    """The next message not of a ``skip`` type, within the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no message before the deadline"
        message: dict[str, Any] = await communicator.receive_json_from(timeout=remaining)
        if message["type"] not in skip:
            return message


async def subscribe(communicator: WebsocketCommunicator, project: str, environment: str,
                    since: int | None = None) -> list[dict[str, Any]]:
    """Send a subscribe; every message up to and including ``subscribed``."""
    await communicator.send_json_to({"type": "subscribe", "project": project,
                                     "environment": environment, "since_revision": since})
    messages = []
    while True:
        message = await next_message(communicator)
        messages.append(message)
        assert message["type"] != "error", message
        if message["type"] == "subscribed":
            return messages


async def toggle(api: APIClient, project: str, environment: str, flag: str, on: bool) -> int:
    """Turn a flag on/off through the REST API; the revision of the save."""
    response = await sync_to_async(api.post)(
        f"/api/v1/projects/{project}/environments/{environment}/flags/{flag}/toggle/",
        {"on": on}, format="json")
    assert response.status_code == 200, response.content
    return int(response.json()["revision"])


async def test_subscribe_without_revision_gets_a_snapshot(
        connect: Connect, project: str, flag: str) -> None:
    ws = await connect()
    snapshot, subscribed = await subscribe(ws, project, "production")
    assert snapshot["type"] == "snapshot"
    assert snapshot["project"] == project and snapshot["environment"] == "production"
    assert set(snapshot["flags"]) == {flag}
    assert snapshot["flags"][flag]["key"] == flag and snapshot["flags"][flag]["on"] is False
    assert snapshot["segments"] == {}
    assert subscribed == {"type": "subscribed", "project": project, "environment": "production",
                          "mode": "snapshot", "revision": snapshot["revision"]}


async def test_a_save_through_the_api_arrives_as_one_event(
        connect: Connect, api: APIClient, project: str, flag: str) -> None:
    ws = await connect()
    await subscribe(ws, project, "production")
    other = await connect()
    await subscribe(other, project, "staging")
    revision = await toggle(api, project, "production", flag, True)
    event = await next_message(ws)
    assert event["type"] == "event" and event["revision"] == revision
    assert [(c["op"], c["key"], c["flag"]) for c in event["changes"]] == [
        ("put", f"/flags/{project}/production/{flag}", flag)]
    assert event["changes"][0]["doc"]["on"] is True
    assert "actor" in event
    # The staging subscriber hears nothing of production (its next message is its own change).
    staging_revision = await toggle(api, project, "staging", flag, True)
    assert (await next_message(other))["revision"] == staging_revision


async def test_a_flag_created_in_every_environment_is_one_event_per_environment(
        connect: Connect, api: APIClient, project: str) -> None:
    from platform_support import boolean_flag

    ws = await connect()
    await subscribe(ws, project, "staging")
    response = await sync_to_async(api.post)(f"/api/v1/projects/{project}/flags/",
                                             {"document": boolean_flag("f1")}, format="json")
    assert response.status_code == 201, response.content
    event = await next_message(ws)
    assert [c["flag"] for c in event["changes"]] == ["f1"]
    assert event["changes"][0]["doc"]["key"] == "f1"


async def test_resume_delivers_exactly_the_missed_events(
        connect: Connect, api: APIClient, project: str, flag: str) -> None:
    ws = await connect()
    messages = await subscribe(ws, project, "production")
    last_seen = messages[-1]["revision"]
    await ws.disconnect()

    missed = []
    for on in (True, False, True):
        missed.append(await toggle(api, project, "production", flag, on))
        await toggle(api, project, "staging", flag, on)  # other environment: not replayed

    ws = await connect()
    messages = await subscribe(ws, project, "production", since=last_seen)
    events, subscribed = messages[:-1], messages[-1]
    assert [e["type"] for e in events] == ["event"] * 3
    assert [e["revision"] for e in events] == missed
    assert [e["changes"][0]["doc"]["on"] for e in events] == [True, False, True]
    assert subscribed["mode"] == "resume" and subscribed["revision"] >= missed[-1]

    # Live from here, each revision once: the next message is the next save, not a replay.
    live = await toggle(api, project, "production", flag, False)
    event = await next_message(ws)
    assert event["revision"] == live and event["changes"][0]["doc"]["on"] is False

    # Resuming from the newest revision replays nothing.
    again = await connect()
    messages = await subscribe(again, project, "production", since=live)
    assert [m["type"] for m in messages] == ["subscribed"]
    assert messages[0]["revision"] >= live


async def test_a_compacted_revision_gets_a_snapshot(
        connect: Connect, api: APIClient, project: str, flag: str) -> None:
    old = await toggle(api, project, "production", flag, True)
    current = await toggle(api, project, "production", flag, False)
    await core().client().compact(current)
    ws = await connect()
    # The events after ``old - 1`` start at ``old``, which is compacted now; after ``old``
    # they start at ``current``, still in history: a resume.
    resumed = await subscribe(ws, project, "production", since=old)
    assert [m["revision"] for m in resumed] == [current, current]
    assert resumed[-1]["mode"] == "resume"
    ws = await connect()
    snapshot, subscribed = await subscribe(ws, project, "production", since=old - 1)
    assert snapshot["type"] == "snapshot" and snapshot["revision"] >= current
    assert snapshot["flags"][flag]["on"] is False
    assert subscribed["mode"] == "snapshot"


async def test_a_future_revision_gets_a_snapshot(
        connect: Connect, project: str, flag: str) -> None:
    ws = await connect()
    snapshot, subscribed = await subscribe(ws, project, "production", since=10**12)
    assert snapshot["type"] == "snapshot" and subscribed["mode"] == "snapshot"


@pytest.fixture
def fast_heartbeats(channel_layer: str, settings: Any) -> None:
    """Heartbeats every 0.1 s (set outside the loop: a FLAGSTAFF_* change resets the gateway)."""
    settings.FLAGSTAFF_LIVE_HEARTBEAT_SECONDS = 0.1


async def test_heartbeats_carry_the_last_revision(
        fast_heartbeats: None, connect: Connect, project: str, flag: str) -> None:
    ws = await connect()
    messages = await subscribe(ws, project, "production")
    for _ in range(2):
        heartbeat = await next_message(ws, skip=())
        assert heartbeat == {"type": "heartbeat", "project": project,
                             "environment": "production", "revision": messages[-1]["revision"]}


async def test_an_unauthenticated_connect_is_refused(connect: Connect) -> None:
    ws = await connect(cookie=None, expect_accept=False)
    assert ws is not None
    ws2 = WebsocketCommunicator(application, "/ws/v1/flags/",
                                headers=[(b"origin", b"http://127.0.0.1")])
    connected, code = await ws2.connect(timeout=DEADLINE)
    assert (connected, code) == (False, CLOSE_UNAUTHENTICATED)


async def test_bad_and_unknown_subscriptions_are_errors(
        connect: Connect, project: str) -> None:
    ws = await connect()
    await ws.send_json_to({"type": "subscribe", "project": project, "environment": "nope",
                           "since_revision": None})
    error = await next_message(ws)
    assert error["type"] == "error" and error["code"] == "not_found"
    await ws.send_json_to({"type": "subscribe", "project": "Bad/Key", "environment": "x"})
    assert (await next_message(ws))["code"] == "bad_request"
    await ws.send_json_to({"type": "subscribe", "project": project, "environment": "staging",
                           "since_revision": -1})
    assert (await next_message(ws))["code"] == "bad_request"
    await ws.send_json_to({"type": "hello"})
    assert (await next_message(ws))["code"] == "bad_request"
    await ws.send_to(text_data="{not json")
    assert (await next_message(ws))["code"] == "bad_request"
    await ws.send_to(bytes_data=b"\x00")
    assert (await next_message(ws))["code"] == "bad_request"
    # Still usable after the errors.
    assert (await subscribe(ws, project, "staging"))[-1]["type"] == "subscribed"


async def test_unsubscribe_stops_events(
        connect: Connect, api: APIClient, project: str, flag: str) -> None:
    ws = await connect()
    await subscribe(ws, project, "production")
    await subscribe(ws, project, "staging")
    await ws.send_json_to({"type": "unsubscribe", "project": project, "environment": "production"})
    await toggle(api, project, "production", flag, True)
    staging = await toggle(api, project, "staging", flag, True)
    event = await next_message(ws)
    assert (event["environment"], event["revision"]) == ("staging", staging)


async def test_the_relay_resumes_after_its_watch_fails(
        connect: Connect, api: APIClient, project: str, flag: str) -> None:
    ws = await connect()
    await subscribe(ws, project, "production")
    relay = get_relay()
    # Close the core client under the relay's watch: the relay re-creates it from its revision.
    await core().aclose()
    saved = [await toggle(api, project, "production", flag, on) for on in (True, False)]
    received = [(await next_message(ws))["revision"] for _ in saved]
    assert received == saved
    assert relay.restarts >= 1



async def test_a_relay_that_falls_behind_compaction_resyncs_with_a_snapshot(
        connect: Connect, api: APIClient, project: str, flag: str) -> None:
    ws = await connect()
    await subscribe(ws, project, "production")
    relay = get_relay()
    behind = relay.revision
    saved = [await toggle(api, project, "production", flag, on) for on in (True, False)]
    assert [(await next_message(ws))["revision"] for _ in saved] == saved
    current = saved[-1]
    await core().client().compact(current)  # behind + 1 < current: compacted
    # Pretend the relay had published only up to ``behind`` when its watch broke: it must
    # resume from ``behind + 1``, find it compacted, and have consumers send a snapshot.
    relay.revision = behind
    await core().aclose()
    snapshot = await next_message(ws)
    assert snapshot["type"] == "snapshot" and snapshot["revision"] >= current
    assert snapshot["flags"][flag]["on"] is False
    assert relay.resyncs == 1
    # Live again afterwards.
    live = await toggle(api, project, "production", flag, True)
    assert (await next_message(ws))["revision"] == live


# -- latency (printed, never asserted) and several relays ----------------------------------


def percentiles(samples: list[float]) -> str:
    """``p50 x ms, p99 y ms`` of samples in seconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


async def test_save_to_event_latency(
        connect: Connect, channel_layer: str, api: Any, project: str, flag: str) -> None:
    ws = await connect()
    await subscribe(ws, project, "production")
    arrivals: dict[int, float] = {}

    async def read() -> None:  # timestamps each event as it arrives, while a save is running
        while True:
            message = await next_message(ws)
            arrivals[message["revision"]] = time.perf_counter()

    reader = asyncio.get_running_loop().create_task(read())
    to_event, after_response, saves = [], [], []
    try:
        for index in range(SAVES):
            started = time.perf_counter()
            revision = await toggle(api, project, "production", flag, index % 2 == 0)
            answered = time.perf_counter()
            deadline = answered + DEADLINE
            while revision not in arrivals:
                assert time.perf_counter() < deadline and not reader.done(), "no event in time"
                await asyncio.sleep(0.001)
            to_event.append(arrivals[revision] - started)
            after_response.append(arrivals[revision] - answered)
            saves.append(answered - started)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    assert len(arrivals) == SAVES  # each save once, nothing else
    print(f"\n[{channel_layer} layer, {SAVES} saves] REST save started -> websocket event: "
          f"{percentiles(to_event)}; REST save alone: {percentiles(saves)}; "
          f"REST response -> event: {percentiles(after_response)}")


@pytest.fixture
def redis_layer(settings: Any, core_cluster: Any) -> None:
    """The Redis channel layer, under a prefix of this test's own."""
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"flagstaff-test-{uuid.uuid4().hex[:8]}"},
    }}


async def test_two_relays_deliver_each_revision_once_to_each_consumer(
        redis_layer: None, api: Any, project: str, flag: str) -> None:
    layer = get_channel_layer()
    relays = [Relay(layer), Relay(layer)]
    channels = []
    try:
        for relay in relays:
            await relay.ready(DEADLINE)
            channel = await layer.new_channel()
            await layer.group_add(relay.attach(project, "production"), channel)
            channels.append(channel)
        saved = [await toggle(api, project, "production", flag, on) for on in (True, False, True)]
        for channel in channels:
            received = []
            for _ in saved:
                async with asyncio.timeout(DEADLINE):
                    message = await layer.receive(channel)
                received.append(message["message"]["revision"])
            assert received == saved  # each once, in order: no copy from the other relay
    finally:
        for relay in relays:
            await relay.stop()
