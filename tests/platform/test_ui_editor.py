"""The editor pages' newer parts through Django's test client, against a real 3-member core.

Rule reordering (move buttons are plain forms carrying the loaded revision),
the flag's history panel with diffs, who changed a flag, and the config tree
(browse, create, edit, delete, conflicts). Markup anywhere is shown as text.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from platform_support import boolean_flag, core_revision
from rest_framework.test import APIClient

from consensus.client import compare_mod, op_put
from flags import keyspace
from flags.core import Actor, core, encode_json

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _rule(rule_id: str, value: str) -> dict[str, Any]:
    return {"id": rule_id, "clauses": [{"attribute": "email", "operator": "ends_with",
                                        "values": [value]}], "variation": 0}


def _rule_ids(project: str, env: str, flag: str) -> list[str]:
    entry = core().get(keyspace.flag_key(project, env, flag))
    assert entry is not None
    return [r["id"] for r in entry.json().get("rules", [])]


def _form_fields(page: str, form_class: str, index: int = 0) -> dict[str, list[str]]:
    """The hidden inputs of the ``index``-th form with class ``form_class`` (name -> values)."""
    forms = re.findall(rf'<form[^>]*class="{form_class}"[^>]*>(.*?)</form>', page, re.S)
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', forms[index]):
        fields.setdefault(name, []).append(value)
    return fields


@pytest.fixture
def web(api: APIClient, user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ruled_flag(api: APIClient, project: str) -> str:
    """A flag whose production document has rules a, b, c (and an XSS-laden name)."""
    document = boolean_flag("ruled", name=XSS, rules=[_rule(i, f"@{i}.example") for i in "abc"])
    response = api.post(f"/api/v1/projects/{project}/flags/", {"document": document}, format="json")
    assert response.status_code == 201, response.content
    return "ruled"


def test_rules_move_up_and_down_with_the_loaded_revision(
    web: Client, api: APIClient, project: str, ruled_flag: str,
) -> None:
    url = f"/projects/{project}/flags/{ruled_flag}/?env=production"
    page = web.get(url).content.decode()
    assert page.count('class="move-up"') == 2 and page.count('class="move-down"') == 2
    # The first move-up form belongs to rule b: it saves b, a, c.
    up_b = _form_fields(page, "rule-move", 1)
    assert up_b["order"] == ["b", "a", "c"]
    action = f"/projects/{project}/environments/production/flags/{ruled_flag}/rules/reorder/"
    response = web.post(action, up_b)
    assert response.status_code == 302
    assert _rule_ids(project, "production", ruled_flag) == ["b", "a", "c"]
    assert _rule_ids(project, "staging", ruled_flag) == ["a", "b", "c"]

    # The same (now stale) form again: a conflict page, nothing overwritten.
    stale = _form_fields(page, "rule-move", 2)  # "move c up" from the old page: a, c, b
    before = core_revision()
    response = web.post(action, stale)
    assert response.status_code == 409
    body = response.content.decode()
    assert "Someone else saved this flag first" in body and "Keep my order" in body
    assert core_revision() == before
    assert _rule_ids(project, "production", ruled_flag) == ["b", "a", "c"]
    # Keep mine: the conflict form carries their revision.
    match = re.search(r'name="expected_revision" value="(\d+)">\s*<button type="submit" name="resolve"',
                      body)
    assert match
    response = web.post(action, {"order": ["a", "c", "b"], "expected_revision": match.group(1)})
    assert response.status_code == 302
    assert _rule_ids(project, "production", ruled_flag) == ["a", "c", "b"]

    # An order that is not a permutation of the rules: 400 with the field, nothing written.
    page = web.get(url).content.decode()
    fields = _form_fields(page, "rule-move", 0)
    before = core_revision()
    response = web.post(action, {"expected_revision": fields["expected_revision"][0],
                                 "order": ["a", "zzz", "b"]})
    assert response.status_code == 400
    assert "must name each of the flag" in response.content.decode()
    assert core_revision() == before


def test_history_panel_shows_versions_diffs_and_who(
    web: Client, api: APIClient, other_api: APIClient, project: str, ruled_flag: str,
) -> None:
    base = f"/api/v1/projects/{project}/environments/production/flags/{ruled_flag}/"
    state = api.get(base).json()
    renamed = dict(state["document"], description=XSS)
    assert api.put(base, {"document": renamed, "expected_revision": state["revision"]},
                   format="json").status_code == 200
    assert other_api.post(base + "toggle/", {"on": True}, format="json").status_code == 200

    page = web.get(f"/projects/{project}/flags/{ruled_flag}/?env=production").content.decode()
    history = page[page.index('id="history"'):]
    assert history.count('class="version"') == 3
    assert re.search(r'by <span class="updated-by">user:bob</span>', history)
    # Newest first: bob's toggle, then the description change, then the creation.
    first, second, third = re.findall(r'<li class="version".*?</li>\s*(?=<li class="version"|</ol>)',
                                      history, re.S)
    assert "<code>on</code>" in first and "changed" in first
    assert "<code>description</code>" in second and "added" in second
    assert "Created the flag." in third
    # Markup in the diff and in the name is text, never markup.
    assert XSS not in page
    assert "&lt;script&gt;alert(" in history and "&lt;img src=x onerror=alert(1)&gt;" in history
    # The env table says who changed each environment.
    assert re.search(r'class="updated-by">by user:bob</span>', page)

    # Paging through older versions.
    older = web.get(f"/projects/{project}/flags/{ruled_flag}/?env=production&history_before=1").content
    assert b'id="history"' in older


def test_flag_list_filters_by_environment(web: Client, project: str, flag: str) -> None:
    page = web.get(f"/projects/{project}/flags/", {"environment": "production"}).content.decode()
    assert 'td data-environment="production"' in page and 'td data-environment="staging"' not in page
    assert '<option value="production" selected>' in page
    page = web.get(f"/projects/{project}/flags/", {"environment": "nope"}).content.decode()
    assert 'td data-environment="production"' in page and 'td data-environment="staging"' in page


def test_flag_list_says_who_changed_each_flag_last(
    web: Client, api: APIClient, other_api: APIClient, project: str, flag: str,
) -> None:
    url = f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/"
    assert other_api.post(url, {"on": True}, format="json").status_code == 200
    page = web.get(f"/projects/{project}/flags/").content.decode()
    assert re.search(r'changed by <span class="updated-by">user:bob</span> in staging', page)


def test_config_tree_create_edit_delete_and_conflicts(
    web: Client, api: APIClient, new_key: Any,
) -> None:
    top = new_key("svc")
    for path, value in [(f"{top}/db/host", "db.internal"), (f"{top}/db/port", "5432"),
                        (f"{top}/banner", XSS)]:
        assert api.put(f"/api/v1/config/{path}", {"value": value}, format="json").status_code == 200

    page = web.get("/config/").content.decode()
    assert f'<li class="folder" data-path="{top}">' in page
    assert f'<li class="folder" data-path="{top}/db">' in page
    assert f'data-path="{top}/db/host"' in page
    assert XSS not in page and "&lt;script&gt;" in page
    # Folders on the way to the selected key are open; others are closed.
    page = web.get("/config/", {"path": f"{top}/db/port"}).content.decode()
    db_folder = page[page.index(f'data-path="{top}/db">'):]
    assert db_folder.split(">", 2)[1].strip().startswith("<details open")
    fields = _form_fields(page, "stack config-save")
    assert fields["path"] == [f"{top}/db/port"]
    loaded = fields["expected_revision"][0]

    # Create a key (it must not exist yet), then creating it again is refused.
    response = web.post("/config/save/", {"create": "yes", "path": f"{top}/db/user", "value": "app"})
    assert response.status_code == 302
    assert core().get(keyspace.config_key(f"{top}/db/user")).value == b"app"  # type: ignore[union-attr]
    response = web.post("/config/save/", {"create": "yes", "path": f"{top}/db/user", "value": "x"})
    assert response.status_code == 409 and "exists already" in response.content.decode()
    response = web.post("/config/save/", {"create": "yes", "path": "bad//path", "value": "x"})
    assert response.status_code == 400
    assert core().get(keyspace.config_key(f"{top}/db/user")).value == b"app"  # type: ignore[union-attr]

    # Edit with the loaded revision; a second save from the same page is a conflict.
    response = web.post("/config/save/", {"path": f"{top}/db/port", "value": "6432",
                                          "expected_revision": loaded})
    assert response.status_code == 302
    before = core_revision()
    response = web.post("/config/save/", {"path": f"{top}/db/port", "value": "7000",
                                          "expected_revision": loaded})
    assert response.status_code == 409
    body = response.content.decode()
    assert "Someone else changed" in body and "6432" in body and "Keep mine" in body
    assert core_revision() == before
    # Deleting from the stale page is a conflict too; with the fresh revision it goes.
    response = web.post("/config/delete/", {"path": f"{top}/db/port", "expected_revision": loaded})
    assert response.status_code == 409
    assert core().get(keyspace.config_key(f"{top}/db/port")) is not None
    fresh = core().get(keyspace.config_key(f"{top}/db/port"))
    assert fresh is not None
    response = web.post("/config/delete/", {"path": f"{top}/db/port",
                                            "expected_revision": str(fresh.revision)})
    assert response.status_code == 302
    assert core().get(keyspace.config_key(f"{top}/db/port")) is None
    # A value over the limit is refused with its field; nothing changes.
    before = core_revision()
    response = web.post("/config/save/", {"path": f"{top}/db/host", "value": "x" * (256 * 1024 + 1),
                                          "expected_revision": "1"})
    assert response.status_code == 400 and "limit" in response.content.decode()
    assert core_revision() == before


def test_config_pages_need_a_login(core_cluster: Any, db: Any) -> None:
    anonymous = Client()
    assert anonymous.get("/config/").status_code == 302
    assert anonymous.post("/config/save/", {"create": "yes", "path": "x/y", "value": "1"}).status_code == 302
    assert core().get(keyspace.config_key("x/y")) is None


def test_markup_in_rules_and_in_who_changed_it_is_text(
    web: Client, api: APIClient, project: str,
) -> None:
    """A rule description, and an updated_by written behind the platform's back (etcdctl), are text."""
    rule = dict(_rule("r1", "@x.example"), description=XSS)
    document = boolean_flag("marked", rules=[rule, _rule("r2", "@y.example")])
    assert api.post(f"/api/v1/projects/{project}/flags/", {"document": document},
                    format="json").status_code == 201
    entry = core().get(keyspace.flag_key(project, "production", "marked"))
    assert entry is not None
    key = keyspace.flag_key(project, "production", "marked")
    forged = dict(entry.json(), updated_by=XSS, on=True)
    response = core().commit([compare_mod(key, "=", entry.revision)], [op_put(key, encode_json(forged))],
                             actor=Actor.system("tests"), expect={key: encode_json(forged)})
    assert response.succeeded
    for url in (f"/projects/{project}/flags/marked/?env=production", f"/projects/{project}/flags/"):
        page = web.get(url).content.decode()
        assert XSS not in page and "<script>alert" not in page
        assert "&lt;script&gt;alert(" in page


def test_huge_or_malformed_posts_to_the_new_forms_change_nothing(
    web: Client, project: str, ruled_flag: str,
) -> None:
    before = core_revision()
    action = f"/projects/{project}/environments/production/flags/{ruled_flag}/rules/reorder/"
    # Over the 1 MiB request limit: refused before anything is read.
    response = web.post(action, {"expected_revision": "1", "order": ["a"] * 10,
                                 "padding": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 400
    response = web.post("/config/save/", {"create": "yes", "path": "big/value",
                                          "value": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 400
    # No revision, or a bogus one.
    for revision in ("", "soon", "-1"):
        response = web.post(action, {"expected_revision": revision, "order": ["c", "b", "a"]})
        assert response.status_code == 400, revision
        response = web.post("/config/save/", {"path": "a/b", "value": "1", "expected_revision": revision})
        assert response.status_code == 400, revision
    # Paths with markup are not config paths.
    response = web.post("/config/save/", {"create": "yes", "path": "<b>x</b>", "value": "1"})
    assert response.status_code == 400 and "<b>x</b>" not in response.content.decode()
    assert core_revision() == before
    assert _rule_ids(project, "production", ruled_flag) == ["a", "b", "c"]
