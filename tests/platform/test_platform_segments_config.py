"""Segments, config keys, the OpenAPI schema, login and the bootstrap admin."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from platform_support import boolean_flag, core_revision, etcdctl, grant_editor
from rest_framework.test import APIClient

from flags import keyspace
from flags.core import core
from tests.cluster.harness import Cluster


def test_segments_crud_with_compare_and_swap(api: APIClient, project: str) -> None:
    base = f"/api/v1/projects/{project}/environments/staging/segments/"
    created = api.post(base, {"document": {"key": "beta", "name": "Beta <testers>",
                                           "included": ["user-1"]}}, format="json")
    assert created.status_code == 201, created.content
    revision = created.json()["revision"]
    assert [s["key"] for s in api.get(base).json()] == ["beta"]
    entry = core().get(keyspace.segment_key(project, "staging", "beta"))
    assert entry is not None and entry.json()["name"] == "Beta <testers>"

    doc = dict(created.json()["document"], included=["user-1", "user-2"])
    updated = api.put(base + "beta/", {"document": doc, "expected_revision": revision}, format="json")
    assert updated.status_code == 200 and updated.json()["document"]["version"] == 2
    before = core_revision()
    stale = api.put(base + "beta/", {"document": doc, "expected_revision": revision}, format="json")
    assert stale.status_code == 409
    assert stale.json()["current"]["document"]["included"] == ["user-1", "user-2"]
    bad = api.put(base + "beta/", {"document": dict(doc, excluded=["user-1"]),
                                   "expected_revision": updated.json()["revision"]}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "document.excluded[0]"
    assert core_revision() == before

    # A flag rule on the segment, evaluated by the preview with the environment's segments.
    flag = boolean_flag("beta-only", on=True, rules=[{
        "id": "r1", "clauses": [{"operator": "segment_match", "values": ["beta"]}], "variation": 0}])
    assert api.post(f"/api/v1/projects/{project}/flags/", {"document": flag},
                    format="json").status_code == 201
    url = f"/api/v1/projects/{project}/environments/staging/flags/beta-only/evaluate/"
    hit = api.post(url, {"context": {"key": "user-2"}}, format="json").json()
    assert hit["value"] is True and hit["reason"]["kind"] == "RULE_MATCH"

    assert api.delete(base + "beta/").status_code == 204
    assert core().get(keyspace.segment_key(project, "staging", "beta")) is None


def test_config_tree(api: APIClient, new_key: Any, core_cluster: Cluster) -> None:
    root = new_key("svc")
    for path, value in [(f"{root}/db/url", "postgres://db"), (f"{root}/db/pool", "10"),
                        (f"{root}/name", "<b>billing</b>")]:
        response = api.put(f"/api/v1/config/{path}", {"value": value}, format="json")
        assert response.status_code == 200, response.content
    assert etcdctl(core_cluster, "get", f"/config/{root}/db/pool", "--print-value-only").strip() == "10"

    flat = api.get(f"/api/v1/config/?prefix={root}/").json()
    assert [i["path"] for i in flat["items"]] == [f"{root}/db/pool", f"{root}/db/url", f"{root}/name"]
    tree = api.get(f"/api/v1/config/?prefix={root}/&shape=tree").json()["tree"]
    (top,) = tree["children"]
    assert top["name"] == root
    assert [c["name"] for c in top["children"]] == ["db", "name"]
    assert top["children"][1]["value"] == "<b>billing</b>"

    key = f"{root}/db/pool"
    loaded = api.get(f"/api/v1/config/{key}").json()
    assert loaded["value"] == "10"
    ok = api.put(f"/api/v1/config/{key}", {"value": "20", "expected_revision": loaded["revision"]},
                 format="json")
    assert ok.status_code == 200
    before = core_revision()
    stale = api.put(f"/api/v1/config/{key}", {"value": "30", "expected_revision": loaded["revision"]},
                    format="json")
    assert stale.status_code == 409 and stale.json()["current"]["document"] == "20"
    exists = api.put(f"/api/v1/config/{key}", {"value": "1", "expected_revision": 0}, format="json")
    assert exists.status_code == 409
    for bad in [f"{root}//x", f"{root}/../x", f"{root}/sp ace"]:
        assert api.put(f"/api/v1/config/{bad}", {"value": "1"}, format="json").status_code in (400, 404)
    too_big = api.put(f"/api/v1/config/{key}", {"value": "x" * (300 * 1024)}, format="json")
    assert too_big.status_code == 400 and too_big.json()["errors"][0]["field"] == "value"
    assert core_revision() == before

    assert api.delete(f"/api/v1/config/{key}").status_code == 204
    assert api.get(f"/api/v1/config/{key}").status_code == 404
    assert api.delete(f"/api/v1/config/{key}").status_code == 404


def test_openapi_schema(api: APIClient) -> None:
    response = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    assert "/api/v1/projects/{project}/environments/{environment}/flags/{flag}/" in paths
    assert "/api/v1/projects/{project}/flags/{flag}/kill-switch/" in paths
    put = paths["/api/v1/projects/{project}/environments/{environment}/flags/{flag}/"]["put"]
    assert "409" in put["responses"]


def test_login_page_and_session(core_cluster: Cluster, db: Any) -> None:
    grant_editor(get_user_model().objects.create_user("dana", password="dana-password"))
    browser = Client(enforce_csrf_checks=True)
    assert browser.get("/").status_code == 302
    page = browser.get("/accounts/login/")
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
    token = page.cookies["csrftoken"].value
    logged_in = browser.post("/accounts/login/", {"username": "dana", "password": "dana-password",
                                                  "csrfmiddlewaretoken": token})
    assert logged_in.status_code == 302
    assert browser.get("/").status_code == 200
    api = browser.get("/api/v1/projects/")
    assert api.status_code == 200, "the REST API accepts the session"
    # A session-authenticated write needs the CSRF token.
    refused = browser.post("/api/v1/projects/", {"key": "x", "name": "x"},
                           content_type="application/json")
    assert refused.status_code == 403


def test_token_endpoint(core_cluster: Cluster, user: Any) -> None:
    response = APIClient().post("/api/v1/auth/token/",
                                {"username": "alice", "password": "alice-password"}, format="json")
    assert response.status_code == 201 and response.json()["token"].startswith("fs_automation_")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    assert client.get("/api/v1/projects/").status_code == 200


@pytest.mark.django_db
def test_ensure_admin_creates_one_admin_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLAGSTAFF_ADMIN_PASSWORD", raising=False)
    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    text = out.getvalue()
    assert "one-time password: " in text
    password = text.split("one-time password: ")[1].split()[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    again = io.StringIO()
    call_command("ensure_admin", stdout=again)
    assert "exists already" in again.getvalue()
    assert get_user_model().objects.get(username="admin").check_password(password)


@pytest.mark.django_db
def test_ensure_admin_takes_the_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGSTAFF_ADMIN_PASSWORD", "from-env-123")
    out = io.StringIO()
    call_command("ensure_admin", "--username", "root", stdout=out)
    assert "from-env-123" not in out.getvalue()
    assert get_user_model().objects.get(username="root").check_password("from-env-123")
