"""The editor's HTML pages through Django's test client, against a real 3-member core.

Thin views over ``flags.access``/``flags.actions``: these tests check what a
person sees and that each form changes the core exactly as intended -- the
revision the page loaded is sent back and a concurrent save is shown as a
conflict, never overwritten; markup in names is rendered escaped; every form
needs its CSRF token.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.test import Client
from platform_support import boolean_flag, core_revision
from rest_framework.test import APIClient

from flags import keyspace
from flags.core import core

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _stored(project: str, env: str, flag: str) -> tuple[dict[str, Any], int]:
    entry = core().get(keyspace.flag_key(project, env, flag))
    assert entry is not None
    return entry.json(), entry.revision


def _loaded_revision(page: str, form_action: str) -> int:
    """The expected_revision the page put in the form posting to ``form_action``."""
    form = page[page.index(f'action="{form_action}"'):]
    match = re.search(r'name="expected_revision" value="(\d+)"', form)
    assert match, "the form carries the revision the page loaded"
    return int(match.group(1))


@pytest.fixture
def web(api: APIClient, user: Any) -> Client:
    """alice in a browser session (the core cluster is up through ``api``)."""
    client = Client()
    client.force_login(user)
    return client


def test_pages_need_a_login(web: Client, project: str, flag: str) -> None:
    anonymous = Client()
    response = anonymous.get(f"/projects/{project}/flags/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    response = anonymous.post(f"/projects/{project}/environments/staging/flags/{flag}/toggle/",
                              {"on": "true"})
    assert response.status_code == 302
    assert _stored(project, "staging", flag)[0]["on"] is False


def test_home_links_projects_and_unknown_pages_are_404(web: Client, project: str) -> None:
    page = web.get("/").content.decode()
    assert f'href="/projects/{project}/flags/"' in page
    assert web.get("/projects/no-such-project/flags/").status_code == 404
    assert web.get(f"/projects/{project}/flags/no-such-flag/").status_code == 404
    assert web.get("/projects/BAD KEY/flags/").status_code == 404


def test_flag_list_searches_and_filters_by_tag(web: Client, api: APIClient, project: str) -> None:
    for key, name, tags in [("dark-mode", "Dark mode", ["ui"]),
                            ("new-checkout", "New checkout", ["checkout"]),
                            ("fast-search", "Faster search", ["ui", "search"])]:
        response = api.post(f"/api/v1/projects/{project}/flags/",
                            {"document": boolean_flag(key, name=name, tags=tags)}, format="json")
        assert response.status_code == 201
    page = web.get(f"/projects/{project}/flags/").content.decode()
    for key in ("dark-mode", "new-checkout", "fast-search"):
        assert f'data-flag="{key}"' in page
    assert '<option value="search">' in page and '<option value="ui">' in page
    # Each flag has a toggle per environment.
    assert page.count('class="toggle"') == 3 * 2

    page = web.get(f"/projects/{project}/flags/", {"q": "CHECKOUT"}).content.decode()
    assert 'data-flag="new-checkout"' in page and 'data-flag="dark-mode"' not in page
    page = web.get(f"/projects/{project}/flags/", {"tag": "ui"}).content.decode()
    assert 'data-flag="dark-mode"' in page and 'data-flag="fast-search"' in page
    assert 'data-flag="new-checkout"' not in page
    page = web.get(f"/projects/{project}/flags/", {"q": "zzz"}).content.decode()
    assert "No flag matches." in page


def test_toggle_from_the_list_turns_one_environment_on(web: Client, project: str, flag: str) -> None:
    list_url = f"/projects/{project}/flags/?tag=checkout"
    response = web.post(f"/projects/{project}/environments/staging/flags/{flag}/toggle/",
                        {"on": "true", "next": list_url})
    assert response.status_code == 302 and response["Location"] == list_url
    assert _stored(project, "staging", flag)[0]["on"] is True
    assert _stored(project, "production", flag)[0]["on"] is False
    page = web.get(list_url).content.decode()
    assert "is now on in staging" in page
    staging = page[page.index('data-environment="staging"'):]
    assert 'aria-pressed="true"' in staging[:800]
    # An off-site `next` is not followed.
    response = web.post(f"/projects/{project}/environments/staging/flags/{flag}/toggle/",
                        {"on": "false", "next": "https://evil.example/"})
    assert response["Location"] == f"/projects/{project}/flags/{flag}/?env=staging"
    assert _stored(project, "staging", flag)[0]["on"] is False


def test_every_form_needs_its_csrf_token(user: Any, api: APIClient, project: str, flag: str) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    page = strict.get(f"/projects/{project}/flags/{flag}/").content.decode()
    forms = page.count("<form method=\"post\"")
    assert forms >= 6 and page.count('name="csrfmiddlewaretoken"') >= forms
    before = core_revision()
    url = f"/projects/{project}/environments/staging/flags/{flag}/toggle/"
    assert strict.post(url, {"on": "true"}).status_code == 403
    assert core_revision() == before
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token
    assert strict.post(url, {"on": "true", "csrfmiddlewaretoken": token.group(1)}).status_code == 302
    assert _stored(project, "staging", flag)[0]["on"] is True


def test_flag_page_shows_environments_variations_rules_and_rollout(
    web: Client, api: APIClient, project: str
) -> None:
    doc = boolean_flag("beta", name="Beta programme", rules=[
        {"id": "staff", "clauses": [{"attribute": "email", "operator": "ends_with",
                                     "values": ["@example.com"]}], "variation": 0}])
    assert api.post(f"/api/v1/projects/{project}/flags/", {"document": doc},
                    format="json").status_code == 201
    api.post(f"/api/v1/projects/{project}/environments/production/flags/beta/rollout/",
             {"percentage": 12.5}, format="json")
    page = web.get(f"/projects/{project}/flags/beta/?env=production").content.decode()
    assert "Beta programme" in page and "Staging" in page and "Production" in page
    assert 'name="percentage" min="0" max="100" step="0.001" value="12.5"' in page
    assert 'type="range" min="0" max="100" step="0.001" value="12.5"' in page
    assert "<strong>staff</strong>" in page and "ends_with" in page
    assert "&quot;@example.com&quot;" in page and "serves variation 0" in page
    assert "<code>true</code>" in page and "<code>false</code>" in page
    _, revision = _stored(project, "production", "beta")
    action = f"/projects/{project}/environments/production/flags/beta/rollout/"
    assert _loaded_revision(page, action) == revision


def test_rollout_saves_exact_percentages_and_rejects_out_of_range(
    web: Client, project: str, flag: str
) -> None:
    url = f"/projects/{project}/flags/{flag}/?env=staging"
    action = f"/projects/{project}/environments/staging/flags/{flag}/rollout/"
    revision = _loaded_revision(web.get(url).content.decode(), action)
    response = web.post(action, {"percentage": "33.333", "expected_revision": revision})
    assert response.status_code == 302
    doc, _ = _stored(project, "staging", flag)
    assert doc["fallthrough"]["rollout"]["variations"] == [
        {"variation": 0, "weight": 33333}, {"variation": 1, "weight": 66667}]

    page = web.get(url).content.decode()
    revision = _loaded_revision(page, action)
    before = core_revision()
    for bad in ("100.5", "-1", "12.0001", "lots"):
        response = web.post(action, {"percentage": bad, "expected_revision": revision})
        assert response.status_code == 400
        body = response.content.decode()
        assert "field-errors" in body and "<code>percentage</code>" in body
    assert core_revision() == before


def test_document_editor_validates_next_to_the_field(web: Client, project: str, flag: str) -> None:
    url = f"/projects/{project}/flags/{flag}/?env=staging"
    action = f"/projects/{project}/environments/staging/flags/{flag}/save/"
    revision = _loaded_revision(web.get(url).content.decode(), action)
    before = core_revision()
    response = web.post(action, {"document": "{not json", "expected_revision": revision})
    assert response.status_code == 400 and "not valid JSON" in response.content.decode()
    bad = boolean_flag(flag, fallthrough={"variation": 7})
    import json
    response = web.post(action, {"document": json.dumps(bad), "expected_revision": revision})
    body = response.content.decode()
    assert response.status_code == 400
    assert "document.fallthrough.variation" in body
    # The draft stays in the editor, escaped.
    assert html.escape('"variation": 7', quote=True) in body or "&quot;variation&quot;: 7" in body
    assert core_revision() == before

    good = boolean_flag(flag, name="Renamed in the editor", description="why not")
    response = web.post(action, {"document": json.dumps(good), "expected_revision": revision,
                                 "reason": "rename"})
    assert response.status_code == 302
    doc, _ = _stored(project, "staging", flag)
    assert doc["name"] == "Renamed in the editor" and doc["salt"]  # the salt was kept
    assert doc["version"] == 2


def test_a_concurrent_save_is_shown_and_never_overwritten(
    web: Client, other_api: APIClient, project: str, flag: str
) -> None:
    import json
    url = f"/projects/{project}/flags/{flag}/?env=staging"
    action = f"/projects/{project}/environments/staging/flags/{flag}/save/"
    page = web.get(url).content.decode()
    loaded = _loaded_revision(page, action)

    # Bob saves first.
    theirs = boolean_flag(flag, name="Bob's name", tags=["bob"])
    response = other_api.put(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/",
                             {"document": theirs, "expected_revision": loaded}, format="json")
    assert response.status_code == 200, response.content
    bob_revision = response.json()["revision"]

    mine = json.dumps(boolean_flag(flag, name="Alice's name"))
    response = web.post(action, {"document": mine, "expected_revision": loaded})
    assert response.status_code == 409
    body = response.content.decode()
    assert "Someone else saved this flag first" in body
    assert f"r{bob_revision}" in body
    assert html.escape("Bob's name") in body and html.escape("Alice's name") in body
    assert "Keep mine" in body and "Take theirs" in body
    doc, revision = _stored(project, "staging", flag)
    assert doc["name"] == "Bob's name" and revision == bob_revision  # not overwritten

    # Keep mine: posts the draft on top of Bob's revision, after seeing it.
    keep = body[body.index("Keep mine") - 1200:body.index("Keep mine")]
    assert f'name="expected_revision" value="{bob_revision}"' in keep
    response = web.post(action, {"document": mine, "expected_revision": bob_revision})
    assert response.status_code == 302
    assert _stored(project, "staging", flag)[0]["name"] == "Alice's name"


def test_a_concurrent_rollout_change_is_shown(
    web: Client, other_api: APIClient, project: str, flag: str
) -> None:
    url = f"/projects/{project}/flags/{flag}/?env=production"
    action = f"/projects/{project}/environments/production/flags/{flag}/rollout/"
    loaded = _loaded_revision(web.get(url).content.decode(), action)
    response = other_api.post(
        f"/api/v1/projects/{project}/environments/production/flags/{flag}/rollout/",
        {"percentage": 50}, format="json")
    assert response.status_code == 200
    response = web.post(action, {"percentage": "10", "expected_revision": loaded})
    assert response.status_code == 409
    body = response.content.decode()
    assert 'class="mine">10%' in body and 'class="theirs">50%' in body
    doc, _ = _stored(project, "production", flag)
    assert doc["fallthrough"]["rollout"]["variations"][0]["weight"] == 50000


def test_markup_in_names_is_rendered_escaped(
    web: Client, api: APIClient, new_key: Any
) -> None:
    key = new_key("x")
    response = api.post("/api/v1/projects/", {
        "key": key, "name": XSS, "description": XSS,
        "environments": [{"key": "prod", "name": XSS}]}, format="json")
    assert response.status_code == 201
    doc = boolean_flag("xss", name=XSS, description=XSS, tags=["<b>bold</b>"])
    assert api.post(f"/api/v1/projects/{key}/flags/", {"document": doc},
                    format="json").status_code == 201
    for url in ("/", f"/projects/{key}/flags/", f"/projects/{key}/flags/xss/",
                f"/projects/{key}/flags/?q=<script>"):
        body = web.get(url).content.decode()
        assert "<script>alert" not in body and "<img src=x" not in body and "<b>bold" not in body
        assert "&lt;script&gt;" in body
    # The stored text is kept byte for byte.
    assert _stored(key, "prod", "xss")[0]["name"] == XSS


def test_preview_runs_the_engine_for_a_context(
    web: Client, api: APIClient, project: str, flag: str
) -> None:
    action = f"/projects/{project}/environments/staging/flags/{flag}/preview/"
    body = web.post(action, {"context": '{"key": "user-1"}'}).content.decode()
    assert 'class="preview-value">false</code>' in body and "<code>OFF</code>" in body
    api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/toggle/",
             {"on": True}, format="json")
    api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/rollout/",
             {"percentage": 100}, format="json")
    before = core_revision()
    body = web.post(action, {"context": '{"key": "user-1"}'}).content.decode()
    assert 'class="preview-value">true</code>' in body and "<code>FALLTHROUGH</code>" in body
    response = web.post(action, {"context": "[1, 2]"})
    assert response.status_code == 400 and "must be a JSON object" in response.content.decode()
    assert core_revision() == before


def test_kill_switch_needs_confirmation_then_turns_every_environment_off(
    web: Client, api: APIClient, project: str, flag: str
) -> None:
    for env in ("staging", "production"):
        api.post(f"/api/v1/projects/{project}/environments/{env}/flags/{flag}/toggle/",
                 {"on": True}, format="json")
    url = f"/projects/{project}/flags/{flag}/kill-switch/"
    before = core_revision()
    response = web.post(url, {})
    assert response.status_code == 302 and core_revision() == before
    response = web.post(url, {"confirm": "yes"}, follow=True)
    assert "Kill switch" in response.content.decode()
    revisions = set()
    for env in ("staging", "production"):
        doc, revision = _stored(project, env, flag)
        assert doc["on"] is False
        revisions.add(revision)
    assert len(revisions) == 1, "one transaction"


def test_create_a_flag_from_the_list(web: Client, project: str) -> None:
    url = f"/projects/{project}/new-flag/"
    response = web.post(url, {"key": "from-ui", "name": "From the UI", "tags": "ui, new"})
    assert response.status_code == 302
    assert response["Location"] == f"/projects/{project}/flags/from-ui/"
    for env in ("staging", "production"):
        doc, _ = _stored(project, env, "from-ui")
        assert doc["name"] == "From the UI" and doc["tags"] == ["ui", "new"] and doc["on"] is False
    before = core_revision()
    response = web.post(url, {"key": "Bad Key!", "name": "x"})
    assert response.status_code == 400 and "document.key" in response.content.decode()
    response = web.post(url, {"key": "from-ui", "name": "again"})
    assert response.status_code == 409 and "exists already" in response.content.decode()
    assert core_revision() == before


def test_documents_written_behind_the_platform_still_render(
    web: Client, project: str, flag: str
) -> None:
    from consensus.client import compare_mod, op_put
    from flags.core import Actor

    odd = {
        "staging": b"not json at all",
        "production": b'{"key": "new-checkout", "rules": [1, {"id": "r", "clauses": 5}], '
                      b'"variations": 3, "fallthrough": []}',
    }
    for env, value in odd.items():
        key = keyspace.flag_key(project, env, flag)
        _, revision = _stored(project, env, flag)
        core().commit([compare_mod(key, "=", revision)], [op_put(key, value)],
                      actor=Actor.system("tests"), expect={key: value})
    assert web.get(f"/projects/{project}/flags/").status_code == 200
    for env in odd:
        page = web.get(f"/projects/{project}/flags/{flag}/?env={env}")
        assert page.status_code == 200
    body = web.post(f"/projects/{project}/environments/production/flags/{flag}/preview/",
                    {"context": '{"key": "u"}'}).content.decode()
    assert "MALFORMED_FLAG" in body
