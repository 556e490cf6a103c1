"""The services page in headless Chromium: rows appear, change and disappear as instances come and go.

Instances are written as the Registry writes them -- a JSON document at
``/services/<service>/<instance>`` on a core lease -- straight through
``consensus.client`` (the page follows the core, whoever writes). Runs
against daphne, a real core and Postgres.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from browser_support import off_loop

from consensus.client import Client
from discovery.instances import Health, Instance
from tests.cluster.harness import Cluster

pytestmark = pytest.mark.django_db(transaction=True)


def _write(endpoints: list[str], instance: Instance, ttl: int) -> int:
    async def put() -> int:
        async with Client(endpoints) as client:
            lease = int((await client.lease_grant(ttl)).ID)
            await client.put(instance.key, instance.document(), lease=lease)
            return lease

    return asyncio.run(put())


def _revoke(endpoints: list[str], lease: int) -> None:
    async def revoke() -> None:
        async with Client(endpoints) as client:
            await client.lease_revoke(lease)

    asyncio.run(revoke())


@pytest.fixture
def ops(django_user_model: Any) -> tuple[str, str]:
    django_user_model.objects.create_superuser("ops", password="ops-password")
    return ("ops", "ops-password")


def test_the_services_page_follows_instances_live(
    web_server: str, core_cluster: Cluster, ops: tuple[str, str], browser: Any,
    screenshot: Callable[[Any, str], Path],
) -> None:
    endpoints = [n.endpoint for n in core_cluster.nodes]
    service = f"web-{uuid.uuid4().hex[:8]}"
    first = Instance(service=service, instance_id="web-1", address="10.0.0.1", port=8080, ttl=60,
                     tags=("blue",), metadata={"version": "1.0"}, registered_at=time.time(),
                     registered_by="token:tests")
    off_loop(_write, endpoints, first, 60)

    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.set_default_timeout(15_000)
    page.goto(web_server + "/accounts/login/?next=/services/")
    page.fill("#id_username", ops[0])
    page.fill("#id_password", ops[1])
    page.click("form.login button[type=submit]")
    page.wait_for_url(web_server + "/services/")
    row = f'tr[data-key="/services/{service}/web-1"]'
    assert page.inner_text(f"{row} td.tags") == "blue"
    assert page.inner_text(f"{row} td.metadata") == "version=1.0"
    page.wait_for_selector("#services-status:has-text('live')")

    # A new instance appears without a reload; a changed one updates; a gone one disappears.
    second = Instance(service=service, instance_id="web-2", address="10.0.0.2", port=8080, ttl=60,
                      tags=("green",), registered_at=time.time())
    off_loop(_write, endpoints, second, 60)
    page.wait_for_selector(f'tr[data-key="/services/{service}/web-2"] td.address:has-text("10.0.0.2:8080")')
    critical = replace(first, health=Health.CRITICAL, health_output="HTTP GET: 503")
    critical_lease = off_loop(_write, endpoints, critical, 60)
    page.wait_for_selector(f"{row}.health-critical td.health:has-text('critical')")
    screenshot(page, "services-01-live")
    off_loop(_revoke, endpoints, critical_lease)  # as when a lease expires
    page.wait_for_selector(row, state="detached")
    assert page.locator(f'tr[data-key="/services/{service}/web-2"]').count() == 1
    page.context.close()

