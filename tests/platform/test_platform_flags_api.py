"""The flags REST API end to end: Django -> flags.actions -> a real 3-member Flagstaff core."""

from __future__ import annotations

import base64
import json
from typing import Any

from platform_support import boolean_flag, core_revision, etcdctl
from rest_framework.test import APIClient

from flags import keyspace
from flags.core import core
from tests.cluster.harness import Cluster


def _stored(project: str, env: str, flag: str) -> tuple[dict[str, Any], int]:
    """The flag document as the core holds it, and its mod revision."""
    entry = core().get(keyspace.flag_key(project, env, flag))
    assert entry is not None
    return entry.json(), entry.revision


def test_projects_environments_and_flags_are_records_in_the_core(
    api: APIClient, project: str, core_cluster: Cluster
) -> None:
    listed = api.get("/api/v1/projects/").json()
    assert project in [p["key"] for p in listed]
    detail = api.get(f"/api/v1/projects/{project}/").json()
    assert detail["name"] == f"Project {project}" and detail["revision"] > 0
    envs = api.get(f"/api/v1/projects/{project}/environments/").json()
    assert [e["key"] for e in envs] == ["production", "staging"]

    created = api.post(f"/api/v1/projects/{project}/flags/",
                       {"document": boolean_flag("dark-mode")}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body["environments"]) == {"staging", "production"}
    revisions = {e["revision"] for e in body["environments"].values()}
    assert len(revisions) == 1, "one transaction creates the flag in every environment"
    doc = body["environments"]["staging"]["document"]
    assert doc["version"] == 1 and doc["salt"] and doc["created_at"] == doc["updated_at"]

    # etcdctl sees the flags exactly where DESIGN.md says they are.
    out = etcdctl(core_cluster, "get", f"/flags/{project}/", "--prefix", "-w", "json")
    kvs = json.loads(out)["kvs"]
    keys = sorted(base64.b64decode(kv["key"]).decode() for kv in kvs)
    assert keys == [f"/flags/{project}/production/dark-mode", f"/flags/{project}/staging/dark-mode"]
    stored = json.loads(base64.b64decode(kvs[0]["value"]))
    assert stored["key"] == "dark-mode" and stored["kind"] == "boolean"
    assert etcdctl(core_cluster, "get", f"/projects/{project}", "--print-value-only").strip()

    one = api.get(f"/api/v1/projects/{project}/environments/production/flags/dark-mode/").json()
    assert one["revision"] == _stored(project, "production", "dark-mode")[1]
    assert one["document"]["name"] == "Flag dark-mode"


def test_flag_list_filters_and_pages(api: APIClient, project: str) -> None:
    for i in range(5):
        doc = boolean_flag(f"flag-{i}", name=f"Feature {i}", tags=["even" if i % 2 == 0 else "odd"])
        assert api.post(f"/api/v1/projects/{project}/flags/", {"document": doc},
                        format="json").status_code == 201
    page = api.get(f"/api/v1/projects/{project}/flags/?page_size=2").json()
    assert page["count"] == 5 and len(page["results"]) == 2 and page["next"]
    assert page["results"][0]["key"] == "flag-0"
    assert set(page["results"][0]["environments"]) == {"staging", "production"}
    tagged = api.get(f"/api/v1/projects/{project}/flags/?tag=even").json()
    assert [f["key"] for f in tagged["results"]] == ["flag-0", "flag-2", "flag-4"]
    found = api.get(f"/api/v1/projects/{project}/flags/?q=feature%203").json()
    assert [f["key"] for f in found["results"]] == ["flag-3"]
    in_env = api.get(f"/api/v1/projects/{project}/flags/?environment=staging&page_size=1").json()
    assert list(in_env["results"][0]["environments"]) == ["staging"]
    missing = api.get(f"/api/v1/projects/{project}/flags/?environment=nope")
    assert missing.status_code == 404


def test_update_is_compare_and_swap_and_a_lost_race_returns_the_other_change(
    api: APIClient, other_api: APIClient, project: str, flag: str
) -> None:
    url = f"/api/v1/projects/{project}/environments/production/flags/{flag}/"
    alice_view = api.get(url).json()
    bob_view = other_api.get(url).json()
    assert alice_view["revision"] == bob_view["revision"]

    bob_doc = dict(bob_view["document"], name="Bob's name", description="bob was here")
    saved = other_api.put(url, {"document": bob_doc, "expected_revision": bob_view["revision"],
                                "reason": "rename"}, format="json")
    assert saved.status_code == 200, saved.content
    bob_revision = saved.json()["revision"]
    assert bob_revision > bob_view["revision"]
    assert saved.json()["document"]["version"] == 2

    alice_doc = dict(alice_view["document"], name="Alice's name")
    lost = api.put(url, {"document": alice_doc, "expected_revision": alice_view["revision"]},
                   format="json")
    assert lost.status_code == 409
    body = lost.json()
    assert body["errors"][0]["field"] == "expected_revision"
    assert body["current"]["revision"] == bob_revision
    assert body["current"]["document"]["name"] == "Bob's name"
    stored, revision = _stored(project, "production", flag)
    assert stored["name"] == "Bob's name" and revision == bob_revision, "never a silent overwrite"

    merged = dict(body["current"]["document"], name="Alice's name")
    retry = api.put(url, {"document": merged, "expected_revision": bob_revision}, format="json")
    assert retry.status_code == 200
    assert _stored(project, "production", flag)[0]["description"] == "bob was here"


def test_toggle(api: APIClient, project: str, flag: str) -> None:
    url = f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/"
    on = api.post(url, {"on": True, "reason": "launch"}, format="json")
    assert on.status_code == 200, on.content
    assert on.json()["document"]["on"] is True
    assert _stored(project, "staging", flag)[0]["on"] is True
    assert _stored(project, "production", flag)[0]["on"] is False
    before = core_revision()
    again = api.post(url, {"on": True}, format="json")
    assert again.status_code == 200 and again.json()["revision"] == on.json()["revision"]
    assert core_revision() == before, "toggling to the current state writes nothing"
    stale = api.post(url, {"on": False, "expected_revision": on.json()["revision"] - 1},
                     format="json")
    assert stale.status_code == 409
    assert core_revision() == before
    bad = api.post(url, {"on": "maybe"}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "on"


def test_rollout_and_its_bounds(api: APIClient, project: str, flag: str) -> None:
    url = f"/api/v1/projects/{project}/environments/production/flags/{flag}/rollout/"
    response = api.post(url, {"percentage": 25.5}, format="json")
    assert response.status_code == 200, response.content
    rollout = response.json()["document"]["fallthrough"]["rollout"]
    assert rollout["variations"] == [{"variation": 0, "weight": 25500},
                                     {"variation": 1, "weight": 74500}]
    before = core_revision()
    for bad in (100.5, -1, "lots", 12.3456, True, None):
        body: dict[str, Any] = {"percentage": bad} if bad is not None else {}
        r = api.post(url, body, format="json")
        assert r.status_code == 400, (bad, r.content)
        assert r.json()["errors"][0]["field"] == "percentage", (bad, r.json())
    r = api.post(url, {"weights": [{"variation": 0, "weight": 50000},
                                   {"variation": 1, "weight": 40000}]}, format="json")
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "weights[1].weight", r.json()
    r = api.post(url, {"weights": [{"variation": 7, "weight": 100000}]}, format="json")
    assert r.status_code == 400 and r.json()["errors"][0]["field"].startswith("weights[0]")
    assert core_revision() == before, "an invalid rollout changes nothing in the core"
    for edge in (0, 100):
        assert api.post(url, {"percentage": edge}, format="json").status_code == 200


def test_kill_switch_turns_every_environment_off_in_one_transaction(
    api: APIClient, project: str, flag: str
) -> None:
    for env in ("staging", "production"):
        url = f"/api/v1/projects/{project}/environments/{env}/flags/{flag}/toggle/"
        assert api.post(url, {"on": True}, format="json").status_code == 200
    response = api.post(f"/api/v1/projects/{project}/flags/{flag}/kill-switch/",
                        {"reason": "incident 42"}, format="json")
    assert response.status_code == 200, response.content
    changed = response.json()
    assert sorted(s["environment"] for s in changed) == ["production", "staging"]
    staging, rev_s = _stored(project, "staging", flag)
    production, rev_p = _stored(project, "production", flag)
    assert staging["on"] is False and production["on"] is False
    assert rev_s == rev_p, "both environments changed at one revision: one transaction"
    before = core_revision()
    again = api.post(f"/api/v1/projects/{project}/flags/{flag}/kill-switch/", format="json")
    assert again.status_code == 200 and again.json() == []
    assert core_revision() == before


def test_copy_settings_between_environments(api: APIClient, project: str, flag: str) -> None:
    base = f"/api/v1/projects/{project}/environments/staging/flags/{flag}/"
    api.post(base + "rollout/", {"percentage": 10}, format="json")
    api.post(base + "toggle/", {"on": True}, format="json")
    target_before, target_rev = _stored(project, "production", flag)
    response = api.post(f"/api/v1/projects/{project}/flags/{flag}/copy/", {
        "source_environment": "staging", "target_environment": "production",
        "include_on": False, "expected_revision": target_rev,
    }, format="json")
    assert response.status_code == 200, response.content
    staging, _ = _stored(project, "staging", flag)
    production, _ = _stored(project, "production", flag)
    assert production["fallthrough"] == staging["fallthrough"]
    assert production["on"] is False, "include_on=false keeps the target's on/off"
    assert production["version"] == target_before["version"] + 1
    stale = api.post(f"/api/v1/projects/{project}/flags/{flag}/copy/", {
        "source_environment": "staging", "target_environment": "production",
        "expected_revision": target_rev,
    }, format="json")
    assert stale.status_code == 409


def test_delete_flag_and_environment_creation_copies_flags_off(
    api: APIClient, project: str, flag: str
) -> None:
    api.post(f"/api/v1/projects/{project}/environments/production/flags/{flag}/toggle/",
             {"on": True}, format="json")
    created = api.post(f"/api/v1/projects/{project}/environments/",
                       {"key": "qa", "name": "QA", "copy_from": "production"}, format="json")
    assert created.status_code == 201, created.content
    qa, _ = _stored(project, "qa", flag)
    assert qa["on"] is False and qa["key"] == flag
    dup = api.post(f"/api/v1/projects/{project}/environments/", {"key": "qa", "name": "QA"},
                   format="json")
    assert dup.status_code == 409 and dup.json()["errors"][0]["field"] == "key"

    assert api.delete(f"/api/v1/projects/{project}/flags/{flag}/").status_code == 204
    assert core().list(keyspace.project_flags_prefix(project)).entries == []
    assert api.get(f"/api/v1/projects/{project}/flags/{flag}/").status_code == 404

    assert api.delete(f"/api/v1/projects/{project}/environments/qa/").status_code == 204
    assert core().get(keyspace.environment_key(project, "qa")) is None
    assert api.delete(f"/api/v1/projects/{project}/").status_code == 204
    assert core().list(f"/environments/{project}/").entries == []
    assert api.get(f"/api/v1/projects/{project}/").status_code == 404


def test_evaluate_preview_runs_the_engine(api: APIClient, project: str, flag: str) -> None:
    url = f"/api/v1/projects/{project}/environments/staging/flags/{flag}/evaluate/"
    off = api.post(url, {"context": {"key": "user-1"}}, format="json").json()
    assert off["value"] is False and off["reason"] == {"kind": "OFF"}
    draft = boolean_flag(flag, on=True, fallthrough={"variation": 0})
    on = api.post(url, {"context": {"key": "user-1"}, "document": draft}, format="json").json()
    assert on["value"] is True and on["reason"] == {"kind": "FALLTHROUGH"}
    broken = api.post(url, {"context": {"key": "u"}, "document": {"key": flag}}, format="json").json()
    assert broken["reason"]["kind"] == "ERROR" and broken["document_errors"]


def test_concurrent_saves_from_the_same_revision_let_exactly_one_win(
    api: APIClient, user: Any, project: str, flag: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from flags.access import access_flag
    from flags.actions import do_update_flag
    from flags.core import Actor
    from flags.exceptions import FlagConflict

    state = access_flag(user, project, "staging", flag)

    def save(i: int) -> str:
        doc = dict(state.document, name=f"editor {i}")
        try:
            do_update_flag(state, doc, expected_revision=state.revision, actor=Actor(f"user:e{i}"))
        except FlagConflict as conflict:
            assert conflict.revision > state.revision
            return "conflict"
        return "saved"

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(save, range(6)))
    assert outcomes.count("saved") == 1 and outcomes.count("conflict") == 5, outcomes
    stored, revision = _stored(project, "staging", flag)
    assert stored["version"] == 2 and revision > state.revision

