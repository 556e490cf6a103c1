"""Webhooks: subscriptions from the UI, signed deliveries of changes from every door, retries, the log.

A local HTTP receiver on an OS-assigned loopback port records what arrives
and answers with scripted statuses. Changes are made through the REST API and
with the real ``etcdctl``; the relay task (what beat ticks) turns the core's
watch history into deliveries and sends them. The receiver checks each
signature exactly as docs/operations.md tells receivers to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from platform_support import core_revision, etcdctl
from rest_framework.test import APIClient

from flags.core import core
from flags.tasks import run_webhooks
from tests.cluster.harness import Cluster, wait_until

pytestmark = pytest.mark.timeout(180)


class Receiver:
    """A webhook receiver: records requests, answers ``statuses`` in turn (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"headers": dict(self.headers), "body": body})
                code = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The receiver's check, as docs/operations.md spells it out (independent of flags.webhooks)."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(fields["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def fast_retries() -> Iterator[None]:
    saved = (settings.FLAGSTAFF_WEBHOOK_BACKOFF_SECONDS, settings.FLAGSTAFF_WEBHOOK_MAX_ATTEMPTS,
             settings.FLAGSTAFF_WEBHOOK_TIMEOUT_SECONDS)
    settings.FLAGSTAFF_WEBHOOK_BACKOFF_SECONDS = 0.1
    settings.FLAGSTAFF_WEBHOOK_MAX_ATTEMPTS = 3
    settings.FLAGSTAFF_WEBHOOK_TIMEOUT_SECONDS = 5
    yield
    (settings.FLAGSTAFF_WEBHOOK_BACKOFF_SECONDS, settings.FLAGSTAFF_WEBHOOK_MAX_ATTEMPTS,
     settings.FLAGSTAFF_WEBHOOK_TIMEOUT_SECONDS) = saved


@pytest.fixture
def staff(db: Any, core_cluster: Cluster) -> Client:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("ops", password="x")
    client = Client()
    client.force_login(user)
    return client


def _subscribe(staff: Client, url: str, prefixes: str) -> tuple[str, str]:
    response = staff.post("/webhooks/", {"url": url, "prefixes": prefixes, "description": "test"})
    assert response.status_code == 201, response.content
    page = response.content.decode()
    secret = re.search(r'<pre class="secret">(whsec_[A-Za-z0-9_-]+)</pre>', page)
    subscription = re.search(r"<h2>Subscription ([0-9a-f]+) created</h2>", page)
    assert secret and subscription
    return subscription.group(1), secret.group(1)


def _until_received(receiver: Receiver, count: int, what: str) -> None:
    def enough() -> bool:
        run_webhooks()
        return len(receiver.requests) >= count
    wait_until(enough, 30, what, interval=0.1)


def test_changes_from_every_door_are_delivered_signed_and_once(
    staff: Client, api: APIClient, project: str, flag: str, receiver: Receiver,
    core_cluster: Cluster, fast_retries: None,
) -> None:
    subscription, secret = _subscribe(staff, receiver.url,
                                      f"/flags/{project}/staging/ /config/{project}/")
    toggled = api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/",
                       {"on": True}, format="json")
    assert toggled.status_code == 200
    api.post(f"/api/v1/projects/{project}/environments/production/flags/{flag}/toggle/",
             {"on": True}, format="json")  # not subscribed
    etcdctl(core_cluster, "put", f"/config/{project}/limits", "42")
    etcdctl(core_cluster, "del", f"/config/{project}/limits")
    etcdctl(core_cluster, "put", f"/config/{project}x/other", "no")  # a prefix's neighbour

    _until_received(receiver, 3, "three deliveries")
    deadline = time.monotonic() + 1.0  # further ticks deliver nothing more
    while time.monotonic() < deadline:
        run_webhooks()
    payloads = receiver.payloads()
    assert [(p["type"], p["key"]) for p in payloads] == [
        ("put", f"/flags/{project}/staging/{flag}"),
        ("put", f"/config/{project}/limits"),
        ("delete", f"/config/{project}/limits"),
    ]
    assert json.loads(payloads[0]["value"])["on"] is True
    assert json.loads(payloads[0]["prev_value"])["on"] is False
    assert payloads[0]["revision"] == toggled.json()["revision"]
    assert payloads[1]["value"] == "42" and payloads[2]["prev_value"] == "42"
    for request, payload in zip(receiver.requests, payloads, strict=True):
        headers = request["headers"]
        assert verify(secret, headers["Flagstaff-Signature"], request["body"])
        assert not verify(secret + "x", headers["Flagstaff-Signature"], request["body"])
        assert not verify(secret, headers["Flagstaff-Signature"], request["body"] + b" ")
        assert headers["Flagstaff-Delivery"] == payload["id"]
        assert headers["Flagstaff-Event"] == payload["type"]
    assert len({p["id"] for p in payloads}) == 3

    page = staff.get(f"/webhooks/{subscription}/").content.decode()
    assert page.count('data-state="delivered"') == 3
    assert "HTTP 200" in page

    revision = core_revision()  # with nothing new, the relay's ticks write nothing
    for _ in range(3):
        run_webhooks()
    assert core_revision() == revision


def test_failures_are_retried_with_backoff_then_given_up_and_redelivered(
    staff: Client, api: APIClient, project: str, flag: str, receiver: Receiver,
    fast_retries: None,
) -> None:
    subscription, secret = _subscribe(staff, receiver.url, f"/flags/{project}/staging/")
    receiver.statuses = [500, 503]  # two failures, then the third attempt succeeds
    api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/",
             {"on": True}, format="json")
    _until_received(receiver, 3, "the third attempt")
    page = staff.get(f"/webhooks/{subscription}/").content.decode()
    assert 'data-state="delivered"' in page
    assert "HTTP 500" in page and "HTTP 503" in page and "(retry in 0.1 s)" in page \
        and "(retry in 0.2 s)" in page
    assert len({r["headers"]["Flagstaff-Delivery"] for r in receiver.requests}) == 1

    receiver.statuses = [500, 500, 500]  # MAX_ATTEMPTS failures: given up
    api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/",
             {"on": False}, format="json")
    _until_received(receiver, 6, "three more attempts")

    def failed() -> str | None:
        run_webhooks()
        page = staff.get(f"/webhooks/{subscription}/").content.decode()
        return page if 'data-state="failed"' in page else None

    page = wait_until(failed, 20, "the delivery to be given up")
    delivery = re.search(r'data-delivery="([0-9-]+)" data-state="failed"', page)
    assert delivery
    # Nothing else is sent for a failed delivery:
    for _ in range(5):
        run_webhooks()
    assert len(receiver.requests) == 6

    response = staff.post(f"/webhooks/{subscription}/deliveries/{delivery.group(1)}/redeliver/")
    assert response.status_code == 302
    _until_received(receiver, 7, "the redelivery")
    assert verify(secret, receiver.requests[-1]["headers"]["Flagstaff-Signature"],
                  receiver.requests[-1]["body"])


def test_a_paused_subscription_gets_nothing_and_bad_input_is_refused(
    staff: Client, api: APIClient, project: str, flag: str, receiver: Receiver,
) -> None:
    for prefixes in ("", "flags/", "/webhooks/"):
        response = staff.post("/webhooks/", {"url": receiver.url, "prefixes": prefixes})
        assert response.status_code == 400
    assert staff.post("/webhooks/", {"url": "ftp://x", "prefixes": "/flags/"}).status_code == 400
    subscription, _ = _subscribe(staff, receiver.url, f"/flags/{project}/")
    staff.post(f"/webhooks/{subscription}/active/", {"active": "false"})
    api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/",
             {"on": True}, format="json")
    for _ in range(3):
        run_webhooks()
    assert receiver.requests == []
    # Resumed: what happened while it was paused stays undelivered; what follows arrives.
    staff.post(f"/webhooks/{subscription}/active/", {"active": "true"})
    api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/",
             {"on": False}, format="json")
    _until_received(receiver, 1, "the change after resuming")
    for _ in range(3):
        run_webhooks()
    assert [json.loads(p["value"])["on"] for p in receiver.payloads()] == [False]
    staff.post(f"/webhooks/{subscription}/delete/", {"confirm": "yes"})
    assert staff.get(f"/webhooks/{subscription}/").status_code == 404


def test_two_relays_at_once_create_each_delivery_once(
    staff: Client, api: APIClient, project: str, flag: str, receiver: Receiver,
    fast_retries: None,
) -> None:
    _subscribe(staff, receiver.url, f"/flags/{project}/")
    for on in (True, False, True, False):
        api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/",
                 {"on": on}, format="json")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def relay() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                run_webhooks()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    _until_received(receiver, 4, "four deliveries")
    for _ in range(3):
        run_webhooks()
    ids = [r["headers"]["Flagstaff-Delivery"] for r in receiver.requests]
    assert len(ids) == len(set(ids)) == 4
    assert [p["revision"] for p in receiver.payloads()] == sorted(p["revision"]
                                                                  for p in receiver.payloads())


def test_large_values_are_split_across_transactions_and_huge_ones_omitted(
    staff: Client, project: str, receiver: Receiver, core_cluster: Cluster, fast_retries: None,
) -> None:
    _subscribe(staff, receiver.url, f"/config/{project}/big/")

    async def put_many() -> None:  # 30 x 60 KB: more delivery records than one core request holds
        client = core().client()
        for i in range(30):
            await client.put(f"/config/{project}/big/k{i:02d}", chr(65 + i) * 60_000)

    core().run(put_many())
    etcdctl(core_cluster, "put", f"/config/{project}/big/huge", "z" * 70_000)
    _until_received(receiver, 31, "31 deliveries")
    payloads = receiver.payloads()
    assert [p["key"].rsplit("/", 1)[1] for p in payloads] == [f"k{i:02d}" for i in range(30)] + ["huge"]
    assert all(p["value"] == chr(65 + i) * 60_000 for i, p in enumerate(payloads[:30]))
    assert payloads[30]["value_omitted"] is True and "value" not in payloads[30]
