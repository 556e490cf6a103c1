"""The editor's newer REST doors: who changed a document, rule reordering, a flag's history.

Against a real 3-member core: ``updated_by`` is stamped by the platform on
every write (whatever the caller sent), rules are reordered with
compare-and-swap on the loaded revision, and the history is read back from
the core's MVCC history with a diff per version -- until compaction.
"""

from __future__ import annotations

from typing import Any

from django.test import Client
from platform_support import boolean_flag, core_revision
from rest_framework.test import APIClient

from flags import keyspace
from flags.core import core


def _rule(rule_id: str, value: str, variation: int = 0) -> dict[str, Any]:
    return {"id": rule_id, "clauses": [{"attribute": "email", "operator": "ends_with",
                                        "values": [value]}], "variation": variation}


def _by_alice(updated_by: str) -> bool:
    """alice acts through her API token here: the actor is ``user:alice`` (plus the token's name)."""
    return updated_by.split("/")[0] == "user:alice"


def _flag_url(project: str, env: str, flag: str) -> str:
    return f"/api/v1/projects/{project}/environments/{env}/flags/{flag}/"


def _stored(project: str, env: str, flag: str) -> tuple[dict[str, Any], int]:
    entry = core().get(keyspace.flag_key(project, env, flag))
    assert entry is not None
    return entry.json(), entry.revision


def _with_rules(api: APIClient, project: str, flag: str, *ids: str) -> int:
    """Give the flag's production document rules ``ids`` (in that order); the new revision."""
    state = api.get(_flag_url(project, "production", flag)).json()
    document = dict(state["document"], rules=[_rule(i, f"@{i}.example") for i in ids])
    response = api.put(_flag_url(project, "production", flag),
                       {"document": document, "expected_revision": state["revision"]}, format="json")
    assert response.status_code == 200, response.content
    return int(response.json()["revision"])


def test_every_write_says_who_made_it(api: APIClient, other_api: APIClient, project: str) -> None:
    # Created by alice (token), whatever updated_by the request claims.
    document = boolean_flag("who", updated_by="user:mallory")
    response = api.post(f"/api/v1/projects/{project}/flags/", {"document": document}, format="json")
    assert response.status_code == 201, response.content
    for env in ("staging", "production"):
        assert _by_alice(_stored(project, env, "who")[0]["updated_by"])
    # Toggled by bob (session): production now says bob, staging still alice.
    response = other_api.post(_flag_url(project, "production", "who") + "toggle/", {"on": True},
                              format="json")
    assert response.status_code == 200, response.content
    assert response.json()["document"]["updated_by"] == "user:bob"
    assert _stored(project, "production", "who")[0]["updated_by"] == "user:bob"
    assert _by_alice(_stored(project, "staging", "who")[0]["updated_by"])
    listing = api.get(f"/api/v1/projects/{project}/flags/").json()["results"][0]
    assert listing["environments"]["production"]["updated_by"] == "user:bob"
    # Segments and projects carry it too.
    response = other_api.post(f"/api/v1/projects/{project}/environments/staging/segments/",
                              {"document": {"key": "beta", "included": ["u1"]}}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["document"]["updated_by"] == "user:bob"
    assert _by_alice(api.get(f"/api/v1/projects/{project}/").json()["updated_by"])


def test_rules_are_reordered_with_the_loaded_revision(
    api: APIClient, other_api: APIClient, project: str, flag: str,
) -> None:
    revision = _with_rules(api, project, flag, "a", "b", "c")
    url = _flag_url(project, "production", flag) + "rules/reorder/"
    response = api.post(url, {"order": ["c", "a", "b"], "expected_revision": revision,
                              "reason": "c first"}, format="json")
    assert response.status_code == 200, response.content
    stored, new_revision = _stored(project, "production", flag)
    assert [r["id"] for r in stored["rules"]] == ["c", "a", "b"]
    assert stored["rules"][0] == _rule("c", "@c.example")
    assert response.json()["revision"] == new_revision

    # Bob reorders from the revision he loaded before alice's save: a conflict with her order.
    response = other_api.post(url, {"order": ["b", "c", "a"], "expected_revision": revision},
                              format="json")
    assert response.status_code == 409
    assert [r["id"] for r in response.json()["current"]["document"]["rules"]] == ["c", "a", "b"]
    assert _stored(project, "production", flag)[1] == new_revision

    # Not a permutation of the rules: 400 pointing at "order", nothing written.
    before = core_revision()
    for order in (["c", "a"], ["c", "a", "b", "d"], ["c", "c", "a"], "c,a,b", [1, 2, 3]):
        response = api.post(url, {"order": order, "expected_revision": new_revision}, format="json")
        assert response.status_code == 400, (order, response.content)
        assert response.json()["errors"][0]["field"] == "order"
    assert core_revision() == before


def test_history_lists_versions_with_diffs_and_pages(
    api: APIClient, other_api: APIClient, project: str, flag: str,
) -> None:
    url = _flag_url(project, "production", flag)
    revision = _with_rules(api, project, flag, "a", "b")
    response = other_api.post(url + "rules/reorder/", {"order": ["b", "a"], "expected_revision": revision},
                              format="json")
    assert response.status_code == 200
    assert other_api.post(url + "rollout/", {"percentage": 25}, format="json").status_code == 200

    history = api.get(url + "history/").json()
    versions = history["versions"]
    assert [v["version"] for v in versions] == [4, 3, 2, 1]
    assert [v["updated_by"] for v in versions[:2]] == ["user:bob", "user:bob"]
    assert all(_by_alice(v["updated_by"]) for v in versions[2:])
    assert versions[0]["revision"] == _stored(project, "production", flag)[1]
    assert history["next_before"] is None and history["compacted"] is False

    rollout = versions[0]["changes"]
    assert [(c["path"], c["op"]) for c in rollout] == [("fallthrough.variation", "removed"),
                                                        ("fallthrough.rollout", "added")]
    assert rollout[1]["after"]["variations"][0] == {"variation": 0, "weight": 25000}
    assert versions[1]["changes"] == [
        {"path": "rules", "op": "reordered", "before": ["a", "b"], "after": ["b", "a"]}]
    assert [(c["path"], c["op"]) for c in versions[2]["changes"]] == [("rules", "added")]
    assert versions[3]["previous"] == "created" and versions[3]["changes"] == []
    assert "rules" not in versions[3]["document"]

    # Paging: two at a time, the second page continues where the first stopped.
    first = api.get(url + "history/?limit=2").json()
    assert [v["version"] for v in first["versions"]] == [4, 3]
    assert first["versions"][1]["previous"] == "next_page"
    assert first["versions"][1]["changes"] == versions[1]["changes"]
    second = api.get(url + f"history/?limit=2&before={first['next_before']}").json()
    assert [v["version"] for v in second["versions"]] == [2, 1]
    assert second["next_before"] is None

    for bad in ("before=abc", "before=0", "limit=-1", "limit=x"):
        assert api.get(url + f"history/?{bad}").status_code == 400, bad
    assert api.get(_flag_url(project, "production", "no-such-flag") + "history/").status_code == 404


def test_history_after_compaction_says_older_versions_are_gone(
    api: APIClient, user: Any, project: str, flag: str,
) -> None:
    url = _flag_url(project, "production", flag)
    for on in (True, False, True):
        assert api.post(url + "toggle/", {"on": on}, format="json").status_code == 200
    _, revision = _stored(project, "production", flag)
    assert api.post(url + "toggle/", {"on": False}, format="json").status_code == 200

    async def compact() -> None:
        await core().client().compact(revision)

    core().run(compact())
    history = api.get(url + "history/").json()
    # The version current at the compaction revision is kept; everything older is gone.
    assert [v["version"] for v in history["versions"]] == [5, 4]
    assert history["versions"][1]["revision"] == revision
    assert history["versions"][1]["previous"] == "compacted"
    assert history["versions"][0]["changes"] == [
        {"path": "on", "op": "changed", "before": True, "after": False}]
    assert history["compacted"] is True and history["next_before"] is None
    # The flag page's history panel says so too.
    web = Client()
    web.force_login(user)
    page = web.get(f"/projects/{project}/flags/{flag}/?env=production").content.decode()
    panel = page[page.index('id="history"'):]
    assert panel.count('class="version"') == 2
    assert "compacted away by the core" in panel and "Older versions are gone" in panel


def test_the_openapi_schema_has_history_and_reordering(api: APIClient) -> None:
    response = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    base = "/api/v1/projects/{project}/environments/{environment}/flags/{flag}/"
    assert "post" in paths[base + "rules/reorder/"]
    assert "get" in paths[base + "history/"]


def test_history_diffs_name_rules_by_id(api: APIClient, project: str, flag: str) -> None:
    url = _flag_url(project, "production", flag)
    _with_rules(api, project, flag, "a", "b", "c")
    state = api.get(url).json()
    rules = state["document"]["rules"]
    rules[0]["clauses"][0]["values"] = ["@a.example", "@a.test"]
    document = dict(state["document"], rules=[rules[2], _rule("d", "@d.example"), rules[0]])
    response = api.put(url, {"document": document, "expected_revision": state["revision"]},
                       format="json")
    assert response.status_code == 200, response.content
    changes = api.get(url + "history/?limit=1").json()["versions"][0]["changes"]
    assert [(c["path"], c["op"]) for c in changes] == [
        ("rules", "reordered"),
        ("rules[id=a].clauses[0].values", "changed"),
        ("rules[id=b]", "removed"),
        ("rules[id=d]", "added"),
    ]
    assert changes[0]["before"] == ["a", "c"] and changes[0]["after"] == ["c", "a"]
    assert changes[1]["after"] == ["@a.example", "@a.test"]
    assert changes[2]["before"]["id"] == "b" and changes[3]["after"]["id"] == "d"
