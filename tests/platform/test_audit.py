"""The audit log from the platform's doors, against the session's real 3-member core.

For each door a change comes through -- an HTML form, the REST API, a job
(``do_*`` with a ``system:`` actor) and ``etcdctl`` straight on the core --
the record shows up with the right principal, actor, source and before/after
values. The review UI filters, shows a diff and exports CSV; the REST endpoint
pages and filters; the server-sent-events stream delivers a new record; a
token scoped to one prefix sees nothing outside it; logins are recorded.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient, Client
from platform_support import etcdctl
from rest_framework.test import APIClient

from consensus.client import compare_version, op_put
from flags import actions, keyspace
from flags.access import access_flag
from flags.core import Actor, core
from tests.cluster.harness import Cluster, wait_until


def audit(client: Any, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/audit/", params)
    assert response.status_code == 200, response.content
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def one_change(record: dict[str, Any], key: str | None = None) -> tuple[str, Any, Any]:
    """(key, before document, after document) of a record's (only, or ``key``'s) change."""
    if key is None:
        (change,) = record["changes"]
    else:
        (change,) = [c for c in record["changes"] if c["key"] == key]

    def parse(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return change["key"], parse(change["before"]), parse(change["after"])


@pytest.fixture
def web(api: APIClient, user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_every_door_is_recorded_with_principal_actor_source_and_values(
    web: Client, api: APIClient, user: Any, core_cluster: Cluster, project: str, flag: str
) -> None:
    key = keyspace.flag_key(project, "staging", flag)
    # 1. The HTML form.
    response = web.post(f"/projects/{project}/environments/staging/flags/{flag}/toggle/",
                        {"on": "true", "reason": "launch day"})
    assert response.status_code == 302
    # 2. The REST API.
    response = api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/",
                        {"on": False, "reason": "rollback"}, format="json")
    assert response.status_code == 200, response.content
    # 3. A job (what Celery tasks do): a do_* action with a system actor.
    state = access_flag(user, project, "staging", flag)
    actions.do_toggle_flag(state, True, actor=Actor.system("nightly", "scheduled enable"))
    # 4. etcdctl straight on the core (no platform involved).
    raw = json.loads(core().get(key).value)  # type: ignore[union-attr]
    raw["description"] = "edited with etcdctl"
    etcdctl(core_cluster, "put", key, json.dumps(raw))

    etcd_rec, job, rest, ui = audit(api, key=key)[:4]
    assert (ui["actor"], ui["source"], ui["reason"]) == ("user:alice", "ui", "launch day")
    assert rest["source"] == "api" and rest["reason"] == "rollback"
    assert rest["actor"].startswith("user:alice")  # the token's owner (user:alice/token:...)
    assert (job["actor"], job["source"], job["reason"]) == ("system:nightly", "job", "scheduled enable")
    assert (etcd_rec["actor"], etcd_rec["source"]) == ("", "grpc")
    for record in (ui, rest, job, etcd_rec):
        assert record["principal"] == "anonymous"  # core auth is off in this cluster
        assert record["action"] == "txn" or record is etcd_rec
    assert etcd_rec["action"] == "put"
    # Before/after are the stored documents, chained record to record.
    chain = [one_change(r) for r in (ui, rest, job, etcd_rec)]
    assert [(b["on"], a["on"]) for _, b, a in chain] == [
        (False, True), (True, False), (False, True), (True, True),
    ]
    for (_, _, after), (_, before, _) in itertools.pairwise(chain):
        assert after == before
    assert chain[-1][2]["description"] == "edited with etcdctl"
    assert ui["revision"] < rest["revision"] < job["revision"] < etcd_rec["revision"]


def test_a_web_process_killed_right_after_the_commit_still_leaves_the_record(
    api: APIClient, core_cluster: Cluster, new_key: Callable[[str], str]
) -> None:
    # A process writing through the platform's gateway (what a daphne worker does)
    # SIGKILLs itself the instant the core acknowledges the commit. Had the audit
    # record been a second write after the change, it would be missing.
    key = f"/config/{new_key('crash')}"
    script = (
        "import os, signal\n"
        "from consensus.client import compare_version, op_put\n"
        "from flags.core import Actor, CoreGateway\n"
        f"g = CoreGateway({[n.endpoint for n in core_cluster.nodes]!r})\n"
        f"g.commit([compare_version({key!r}, '=', 0)], [op_put({key!r}, '42')],\n"
        f"         actor=Actor('user:crash', 'right before the crash', 'ui'), expect={{{key!r}: b'42'}})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (record,) = audit(api, key=key)
    assert (record["actor"], record["reason"], record["source"]) == (
        "user:crash", "right before the crash", "ui")
    assert record["changes"] == [{"key": key, "before": None, "after": "42", "kind": "create"}]


def test_review_ui_filters_shows_a_diff_and_exports_csv(
    web: Client, api: APIClient, project: str, flag: str, new_key: Callable[[str], str]
) -> None:
    web.post(f"/projects/{project}/environments/production/flags/{flag}/toggle/",
             {"on": "true", "reason": "go"})
    key = keyspace.flag_key(project, "production", flag)

    page = web.get("/audit/", {"key": key, "actor": "user:alice", "action": "txn"})
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count('class="audit-record"') == 1
    assert "launch" not in text and "“go”" in text
    assert '<span class="diff-del">-  &quot;on&quot;: false,</span>' in text
    assert '<span class="diff-add">+  &quot;on&quot;: true,</span>' in text
    # Another actor or action: nothing.
    assert web.get("/audit/", {"key": key, "actor": "user:bob"}).content.decode().count(
        'class="audit-record"') == 0
    assert "No audit records match" in web.get("/audit/", {"key": key, "action": "delete"}).content.decode()
    # A prefix and a time range include it; a range in the past does not.
    assert 'class="audit-record"' in web.get(
        "/audit/", {"key": f"/flags/{project}/", "since": "2000-01-01"}).content.decode()
    assert 'class="audit-record"' not in web.get(
        "/audit/", {"key": f"/flags/{project}/", "until": "2000-01-01T00:00"}).content.decode()
    assert web.get("/audit/", {"since": "yesterday"}).status_code == 400

    # The flag page links to the flag's records (every environment); that list has both envs.
    flag_page = web.get(f"/projects/{project}/flags/{flag}/").content.decode()
    link = f"/audit/?flag={project}/{flag}"
    assert link in flag_page
    history = web.get(link).content.decode()
    assert f"/flags/{project}/production/{flag}" in history
    assert f"/flags/{project}/staging/{flag}" in history  # created in both environments

    # One record's page: the diff.
    record = audit(api, key=key)[0]
    detail = web.get(f"/audit/{record['id']}/").content.decode()
    assert "user:alice" in detail and '<span class="diff-add">+  &quot;on&quot;: true,</span>' in detail
    assert web.get("/audit/999999999/").status_code == 404

    # CSV: one row per changed key, the values as stored.
    response = web.get("/audit/export.csv", {"flag": f"{project}/{flag}"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    mine = [r for r in rows if r["key"] == key]
    assert mine[0]["actor"] == "user:alice" and mine[0]["reason"] == "go"
    assert json.loads(mine[0]["after"])["on"] is True and json.loads(mine[0]["before"])["on"] is False
    assert {r["key"] for r in rows} == {f"/flags/{project}/{e}/{flag}" for e in ("staging", "production")}


def test_rest_endpoint_pages_and_filters(api: APIClient, project: str, flag: str) -> None:
    base = f"/api/v1/projects/{project}/environments/staging/flags/{flag}/"
    for i in range(5):
        response = api.post(base + "rollout/", {"percentage": 10 * (i + 1)}, format="json")
        assert response.status_code == 200, response.content
    key = keyspace.flag_key(project, "staging", flag)
    seen: list[dict[str, Any]] = []
    url: str | None = "/api/v1/audit/?" + f"key={key}&limit=2"
    pages = 0
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert len(body["results"]) <= 2
        seen.extend(body["results"])
        url = body["next"]
        pages += 1
    assert pages >= 3 and len(seen) == 6  # 5 rollouts + the creation
    ids = [r["id"] for r in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6
    assert one_change(seen[-1], key)[1] is None  # the oldest is the creation (one txn, both envs)
    assert len(audit(api, key=f"/flags/{project}/", source="api", limit=500)) == 6
    assert audit(api, key=key, source="ui") == []
    # Actors and reasons travel percent-encoded; the API shows and filters them as text.
    key2 = f"/config/{project}/ünïcode"
    core().commit([compare_version(key2, "=", 0)], [op_put(key2, "1")],
                  actor=Actor("user:ålice", "naïve ☃ 100%", "api"), expect={key2: b"1"})
    (mine,) = audit(api, actor="user:ålice")
    assert (mine["actor"], mine["reason"], mine["changes"][0]["key"]) == (
        "user:ålice", "naïve ☃ 100%", key2)
    bad = api.get("/api/v1/audit/", {"limit": "0"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "limit"
    schema = api.get("/api/v1/schema/")
    assert schema.status_code == 200 and b"/api/v1/audit/" in schema.content


def test_reading_is_limited_to_the_callers_prefix(
    user: Any, api: APIClient, project: str, flag: str, new_key: Callable[[str], str]
) -> None:
    from flags.tokens import TokenKind, do_create_token

    other = new_key("q")
    assert api.post("/api/v1/projects/", {"key": other, "name": other, "environments": [
        {"key": "staging", "name": "S"}]}, format="json").status_code == 201
    _, secret = do_create_token(created_by=user, name="narrow", kind=TokenKind.AUTOMATION,
                                scope=f"/flags/{project}/", can_write=False)
    narrow = APIClient()
    narrow.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    keys = {c["key"] for r in audit(narrow, limit=500) for c in r["changes"]}
    # Only this project's records (its project and environment records are visible to
    # anyone who may read inside it: flags.permissions).
    assert any(k.startswith(f"/flags/{project}/") for k in keys)
    assert all(k.startswith((f"/flags/{project}/", f"/environments/{project}/"))
               or k == f"/projects/{project}" for k in keys), keys
    assert audit(narrow, key=f"/environments/{other}/") == []
    assert audit(api, key=f"/environments/{other}/")  # the wider token sees it
    assert all(r["action"] in ("put", "delete", "txn") for r in audit(narrow, limit=500))
    assert APIClient().get("/api/v1/audit/").status_code in (401, 403)


def test_logins_and_failed_logins_are_recorded_for_superusers(
    core_cluster: Cluster, db: Any, new_key: Callable[[str], str]
) -> None:
    from django.contrib.auth import get_user_model

    name = new_key("carol").replace("-", "_")
    get_user_model().objects.create_superuser(name, password="carol-password")
    browser = Client()
    assert browser.post("/accounts/login/", {"username": name, "password": "wrong"}).status_code == 200
    assert browser.post("/accounts/login/", {"username": name, "password": "carol-password"}).status_code == 302

    def events() -> list[str] | None:
        got = [r["action"] for r in audit(browser, actor=f"user:{name}")]
        return got if got[:2] == ["login", "login.failed"] else None

    wait_until(events, 20, "the login events to be recorded")
    failed = audit(browser, actor=f"user:{name}", action="login.failed")[0]
    assert failed["detail"]["username"] == name and "wrong" not in json.dumps(failed)
    assert failed["changes"] == [] and failed["source"] == "ui"


@pytest.mark.django_db(transaction=True)
async def test_the_stream_delivers_a_new_record(core_cluster: Cluster, new_key: Callable[[str], str]) -> None:
    from django.contrib.auth import get_user_model

    name = new_key("sse").replace("-", "_")
    admin = await sync_to_async(get_user_model().objects.create_superuser)(name, password="pw-pw-pw-1")
    client = AsyncClient()
    await client.aforce_login(admin)
    key = f"/config/{new_key('sse')}"
    gateway = core()
    try:
        start = (await gateway.client().range("/")).header.revision + 1
        response = await client.get("/api/v1/audit/stream/", {"key": key, "start_revision": start})
        assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
        chunks = response.streaming_content.__aiter__()  # type: ignore[union-attr]
        await gateway.client().put(key, "1", metadata=Actor("user:sse", "", "api").metadata())

        async def next_event() -> dict[str, Any]:
            while True:
                chunk = (await chunks.__anext__()).decode()
                if chunk.startswith("id: "):
                    lines = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
                    assert lines["event"] == "audit"
                    event: dict[str, Any] = json.loads(lines["data"])
                    assert int(lines["id"]) == event["id"]
                    return event

        event = await asyncio.wait_for(next_event(), 30)
        assert (event["actor"], event["source"]) == ("user:sse", "api")
        assert event["changes"] == [{"key": key, "before": None, "after": "1", "kind": "create"}]
        await chunks.aclose()  # type: ignore[attr-defined]
        unauthenticated = await AsyncClient().get("/api/v1/audit/stream/")
        assert unauthenticated.status_code == 401
    finally:
        await gateway.aclose()
        await sync_to_async(connections.close_all)()  # the executor thread's connection
