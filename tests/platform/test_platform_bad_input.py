"""Bad input is refused with errors that point at the field, and nothing changes in the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from platform_support import boolean_flag, core_revision
from rest_framework.test import APIClient

from flags import keyspace
from flags.core import core

MARKUP = '<script>alert("x")</script><b onmouseover="evil()">bold</b>'


def _first_field(response: Any) -> str | None:
    errors = response.json()["errors"]
    assert errors and all(set(e) == {"field", "message"} and e["message"] for e in errors)
    return errors[0]["field"]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"key": "x", "kind": "boolean"}, "document"),  # required fields missing
        (boolean_flag("x", fallthrough={"variation": 5}), "document.fallthrough.variation"),
        (boolean_flag("x", off_variation=2), "document.off_variation"),
        (boolean_flag("x", variations=[True, "yes"]), "document.variations"),
        (boolean_flag("x", kind="colour"), "document.kind"),
        (boolean_flag("x", surprise=1), "document.surprise"),
        (boolean_flag("x", rules=[{"id": "r1", "clauses": [
            {"attribute": "email", "operator": "sounds_like", "values": ["a"]}], "variation": 0}]),
         "document.rules[0].clauses[0].operator"),
        (boolean_flag("<b>x</b>"), "document.key"),
        (boolean_flag("x", name=MARKUP + "\u0007"), "document.name"),
        (boolean_flag("x", description="d" * 300_000), "document"),
        ([1, 2, 3], "document"),
    ],
)
def test_invalid_flag_documents_are_refused_and_nothing_is_written(
    api: APIClient, project: str, document: Any, field: str
) -> None:
    before = core_revision()
    response = api.post(f"/api/v1/projects/{project}/flags/", {"document": document}, format="json")
    assert response.status_code == 400, response.content
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(f == field or (f or "").startswith(field) for f in fields), fields
    assert core_revision() == before
    assert core().list(keyspace.project_flags_prefix(project)).entries == []


def test_invalid_update_changes_nothing(api: APIClient, project: str, flag: str) -> None:
    url = f"/api/v1/projects/{project}/environments/staging/flags/{flag}/"
    loaded = api.get(url).json()
    before = core_revision()
    for body, field in [
        ({"document": dict(loaded["document"], fallthrough={"variation": 9}),
          "expected_revision": loaded["revision"]}, "document.fallthrough.variation"),
        ({"document": dict(loaded["document"], key="other"), "expected_revision": loaded["revision"]},
         "document.key"),
        ({"document": loaded["document"]}, "expected_revision"),
        ({"document": loaded["document"], "expected_revision": "soon"}, "expected_revision"),
        ({"document": "{}", "expected_revision": loaded["revision"]}, "document"),
    ]:
        response = api.put(url, body, format="json")
        assert response.status_code == 400, response.content
        assert _first_field(response) == field, response.json()
    assert core_revision() == before


def test_huge_request_bodies_are_refused(api: APIClient, project: str) -> None:
    before = core_revision()
    huge = {"document": boolean_flag("big", description="x" * (2 * 1024 * 1024))}
    response = api.post(f"/api/v1/projects/{project}/flags/", huge, format="json")
    assert response.status_code == 413, response.content
    assert response.json()["errors"][0]["message"]
    not_json = api.generic("POST", f"/api/v1/projects/{project}/flags/", "{nope",
                           content_type="application/json")
    assert not_json.status_code == 400
    assert core_revision() == before


def test_names_with_markup_are_stored_as_typed_and_escaped_in_pages(
    api: APIClient, new_key: Callable[[str], str]
) -> None:
    key = new_key("m")
    response = api.post("/api/v1/projects/", {"key": key, "name": MARKUP,
                                              "description": "  <i>spaces kept</i>  "},
                        format="json")
    assert response.status_code == 201, response.content
    stored = core().get(keyspace.project_key(key))
    assert stored is not None and stored.json()["name"] == MARKUP
    assert stored.json()["description"] == "  <i>spaces kept</i>  "
    assert api.get(f"/api/v1/projects/{key}/").json()["name"] == MARKUP

    from django.contrib.auth import get_user_model
    from django.test import Client

    browser = Client()
    browser.force_login(get_user_model().objects.get(username="alice"))
    page = browser.get("/").content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert MARKUP not in page and "<script>alert" not in page


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "<script>", "name": "x"}, "key"),
        ({"key": "UPPER", "name": "x"}, "key"),
        ({"key": "a/b", "name": "x"}, "key"),
        ({"key": "ok-key", "name": ""}, "name"),
        ({"key": "ok-key", "name": "n" * 257}, "name"),
        ({"key": "ok-key", "name": "bell\u0007"}, "name"),
        ({"key": "ok-key"}, "name"),
        ({"key": "ok-key", "name": "x", "environments": [{"key": "Prod"}]}, "environments[0].key"),
        ({"key": "ok-key", "name": "x", "environments": [{"key": "a"}, {"key": "a"}]},
         "environments[1].key"),
    ],
)
def test_invalid_projects_are_refused(api: APIClient, body: dict[str, Any], field: str) -> None:
    before = core_revision()
    response = api.post("/api/v1/projects/", body, format="json")
    assert response.status_code == 400, response.content
    assert _first_field(response) == field, response.json()
    assert core_revision() == before


def test_unknown_records_are_404_and_duplicates_409(api: APIClient, project: str, flag: str) -> None:
    assert api.get("/api/v1/projects/no-such-project/").status_code == 404
    assert api.get(f"/api/v1/projects/{project}/environments/nope/flags/{flag}/").status_code == 404
    assert api.get(f"/api/v1/projects/{project}/environments/staging/flags/nope/").status_code == 404
    before = core_revision()
    dup = api.post(f"/api/v1/projects/{project}/flags/", {"document": boolean_flag(flag)},
                   format="json")
    assert dup.status_code == 409 and _first_field(dup) == "document.key"
    again = api.post("/api/v1/projects/", {"key": project, "name": "again"}, format="json")
    assert again.status_code == 409 and _first_field(again) == "key"
    assert core_revision() == before


def test_requests_without_credentials_are_refused(core_cluster: Any, db: Any) -> None:
    anonymous = APIClient()
    response = anonymous.get("/api/v1/projects/")
    assert response.status_code == 401
    assert response.json()["errors"][0]["field"] is None
    assert anonymous.post("/api/v1/projects/", {"key": "x", "name": "x"},
                          format="json").status_code == 401
