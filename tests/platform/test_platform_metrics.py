"""The platform's ``/metrics``: requests, websocket clients, the relay and Celery task outcomes.

Every check scrapes ``/metrics`` through the ASGI/Django stack (the door
Prometheus uses) before and after doing something a user does, and asserts
the series moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client as DjangoClient
from django.urls import resolve
from flagstaff_platform.asgi import application
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from flags.core import core
from flags.live.relay import stop_relay

DEADLINE = 10.0


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from ``GET /metrics`` (no login needed)."""
    response = DjangoClient().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db
def test_requests_are_counted_by_view_and_status(api: APIClient) -> None:
    view = resolve("/api/v1/projects/").view_name
    before = scrape()
    assert api.get("/api/v1/projects/").status_code == 200
    assert APIClient().get("/api/v1/projects/").status_code == 401
    after = scrape()
    for status in ("200", "401"):
        key = {"view": view, "method": "GET", "status": status}
        assert value(after, "flagstaff_http_requests_total", **key) == \
            value(before, "flagstaff_http_requests_total", **key) + 1
    assert value(after, "flagstaff_http_request_duration_seconds_count", view=view) == \
        value(before, "flagstaff_http_request_duration_seconds_count", view=view) + 2


@pytest.mark.django_db
def test_celery_task_outcomes_are_counted(core_cluster: Any) -> None:
    from flags.tasks import check_core_health

    name = check_core_health.name
    before = scrape()
    check_core_health.apply()
    check_core_health.apply(args=("not-an-argument",))  # a call the task cannot take: a failure
    after = scrape()
    for outcome in ("success", "failure"):
        assert value(after, "flagstaff_celery_tasks_total", task=name, outcome=outcome) == \
            value(before, "flagstaff_celery_tasks_total", task=name, outcome=outcome) + 1


@pytest.fixture
def memory_layer(settings: Any) -> None:
    """The in-memory Channels layer, quiet heartbeats (set outside the event loop)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.FLAGSTAFF_LIVE_HEARTBEAT_SECONDS = 30.0


@pytest.mark.django_db(transaction=True)
async def test_websocket_clients_and_the_relay_show_up(
        api: APIClient, project: str, flag: str, memory_layer: None) -> None:
    path = "/ws/v1/flags/"
    client = DjangoClient()
    assert await sync_to_async(client.login)(username="alice", password="alice-password")
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    before = await sync_to_async(scrape)()
    ws = WebsocketCommunicator(application, path, headers=[
        (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
    try:
        connected, _ = await ws.connect(timeout=DEADLINE)
        assert connected
        during = await sync_to_async(scrape)()
        assert value(during, "flagstaff_websocket_clients", path=path) == \
            value(before, "flagstaff_websocket_clients", path=path) + 1
        assert value(during, "flagstaff_websocket_connections_total", path=path) == \
            value(before, "flagstaff_websocket_connections_total", path=path) + 1
        await ws.send_json_to({"type": "subscribe", "project": project,
                               "environment": "production", "since_revision": None})
        while (await ws.receive_json_from(timeout=DEADLINE))["type"] != "subscribed":
            pass
        response = await sync_to_async(api.post)(
            f"/api/v1/projects/{project}/environments/production/flags/{flag}/toggle/",
            {"on": True}, format="json")
        assert response.status_code == 200
        revision = int(response.json()["revision"])
        while (await ws.receive_json_from(timeout=DEADLINE))["type"] != "event":
            pass
        relayed = await sync_to_async(scrape)()
        assert value(relayed, "flagstaff_relay_revision") >= revision
        assert value(relayed, "flagstaff_relay_batches_total") > \
            value(before, "flagstaff_relay_batches_total")
        assert value(relayed, "flagstaff_relay_publish_duration_seconds_count") > \
            value(before, "flagstaff_relay_publish_duration_seconds_count")
    finally:
        with contextlib.suppress(Exception):
            await ws.disconnect(timeout=DEADLINE)
        await stop_relay()
        await core().aclose()
        await sync_to_async(connections.close_all)()
    deadline = time.monotonic() + DEADLINE
    while True:  # the consumer's task ends shortly after the close
        after = await sync_to_async(scrape)()
        if value(after, "flagstaff_websocket_clients", path=path) == \
                value(before, "flagstaff_websocket_clients", path=path):
            break
        assert time.monotonic() < deadline, "the closed websocket is still counted"
        await asyncio.sleep(0.05)
