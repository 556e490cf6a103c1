"""Stale flags: SDK evaluation counts in, "potentially stale" marks and a filter in the flag list.

Old flags are written with etcdctl carrying old timestamps (as a flag someone
created long ago looks), so no test waits for time to pass. SDK batches go
through ``POST /api/v1/sdk/evaluations/`` with real SDK keys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from platform_support import boolean_flag, etcdctl
from rest_framework.test import APIClient

from flags.tokens import TokenKind, do_create_token
from tests.cluster.harness import Cluster

OLD = "2020-01-01T00:00:00.000Z"
A_MONTH_AGO = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 30 * 86400))


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = settings.FLAGSTAFF_STALE_UNCHANGED_SECONDS, settings.FLAGSTAFF_STALE_UNEVALUATED_SECONDS
    settings.FLAGSTAFF_STALE_UNCHANGED_SECONDS = 365 * 86400
    settings.FLAGSTAFF_STALE_UNEVALUATED_SECONDS = 7 * 86400
    yield
    settings.FLAGSTAFF_STALE_UNCHANGED_SECONDS, settings.FLAGSTAFF_STALE_UNEVALUATED_SECONDS = saved


def _write_old(cluster: Cluster, project: str, flag: str, created: str, updated: str) -> None:
    for env in ("staging", "production"):
        document = boolean_flag(flag, created_at=created, updated_at=updated, version=3,
                                salt="0123456789abcdef")
        etcdctl(cluster, "put", f"/flags/{project}/{env}/{flag}", json.dumps(document))


def _sdk_client(user: Any, scope: str, kind: TokenKind = TokenKind.SDK) -> APIClient:
    _, secret = do_create_token(created_by=user, name=f"sdk-{scope}-{kind}", kind=kind, scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _report(client: APIClient, environment: str, counts: dict[str, Any]) -> Any:
    now = int(time.time())
    return client.post("/api/v1/sdk/evaluations/", {"environment": environment, "counts": counts,
                                                   "start": now - 60, "end": now}, format="json")


def _stale_rows(web: Client, project: str, *, only: bool = False) -> dict[str, str]:
    page = web.get(f"/projects/{project}/flags/" + ("?stale=1" if only else "")).content.decode()
    rows: dict[str, str] = {}
    for chunk in page.split('<tr data-flag="')[1:]:
        key = chunk.split('"', 1)[0]
        marker = 'class="stale-reasons">'
        rows[key] = chunk.split(marker, 1)[1].split("<", 1)[0] if marker in chunk else ""
    return rows


def test_old_and_unevaluated_flags_are_marked_and_filtered_until_sdks_report(
    api: APIClient, user: Any, project: str, flag: str, core_cluster: Cluster, thresholds: None,
) -> None:
    _write_old(core_cluster, project, "old-unused", OLD, OLD)
    _write_old(core_cluster, project, "old-used", OLD, A_MONTH_AGO)
    web = Client()
    web.force_login(user)

    rows = _stale_rows(web, project)
    assert rows == {
        flag: "",  # created just now: neither old nor overdue for evaluations
        "old-unused": "unchanged for 365 days; not evaluated for 7 days",
        "old-used": "not evaluated for 7 days",
    }
    assert set(_stale_rows(web, project, only=True)) == {"old-unused", "old-used"}

    sdk = _sdk_client(user, f"{project}/staging")
    response = _report(sdk, f"{project}/staging", {"old-used": 5, flag: 0, "no-such-flag": 9})
    assert response.status_code == 202, response.content
    assert response.json() == {"counted": 2}
    assert _report(sdk, f"{project}/staging", {"old-used": 7}).status_code == 202

    rows = _stale_rows(web, project)
    assert rows["old-used"] == "" and rows[flag] == ""
    assert rows["old-unused"] == "unchanged for 365 days; not evaluated for 7 days"
    assert set(_stale_rows(web, project, only=True)) == {"old-unused"}
    record = json.loads(etcdctl(core_cluster, "get", f"/evaluations/{project}/staging/old-used",
                                "--print-value-only"))
    assert record["count"] == 12 and record["last_evaluated_at"] >= time.time() - 120
    assert etcdctl(core_cluster, "get", f"/evaluations/{project}/staging/no-such-flag") == ""


def test_only_sdk_keys_for_that_environment_may_report(api: APIClient, user: Any, project: str,
                                                      flag: str) -> None:
    environment = f"{project}/staging"
    assert _report(APIClient(), environment, {flag: 1}).status_code == 401
    automation = _sdk_client(user, "/", TokenKind.AUTOMATION)
    assert _report(automation, environment, {flag: 1}).status_code == 401
    other = _sdk_client(user, f"{project}/production")
    assert _report(other, environment, {flag: 1}).status_code == 403
    sdk = _sdk_client(user, environment)
    for body in (
        {"environment": "nope", "counts": {}, "start": 1, "end": 2},
        {"environment": environment, "counts": {flag: -1}, "start": 1, "end": 2},
        {"environment": environment, "counts": {flag: "many"}, "start": 1, "end": 2},
        {"environment": environment, "counts": {flag: 1}, "start": 5, "end": 2},
        {"environment": environment, "counts": {flag: 1}, "start": 1, "end": time.time() + 86400},
        [1, 2],
    ):
        response = sdk.post("/api/v1/sdk/evaluations/", body, format="json")
        assert response.status_code == 400, (body, response.content)
