"""The permission matrix: per-prefix grants at every door (REST, HTML, websockets, tokens).

One world per test: project P (environments ``staging`` and ``production``,
flag ``secret-flag``, segment ``vip-seg`` in production, config key
``/config/<P>/db``) and project Q, and people:

- ``outsider``: no grant at all,
- ``viewer``: view on ``/flags/<P>/production/``,
- ``editor``: view+edit on ``/flags/<P>/production/``,
- ``manager``: view+manage on ``/flags/<P>/``.

A person without a grant gets 403 or 404 at every door, and no list, search
or count names anything outside their grants. The tables below are the
matrix; each row is a request and what each person gets.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.test import Client
from platform_support import boolean_flag
from rest_framework.test import APIClient

from flags.exceptions import AccessDenied
from flags.namespaces import Namespace, do_create_namespace, do_grant, do_revoke, ensure_namespace
from flags.permissions import Perm, has_permission
from flags.tokens import TokenKind, do_create_token

FLAG = "secret-flag"
SEGMENT = "vip-seg"


@dataclass
class World:
    p: str
    q: str
    people: dict[str, Any]

    def api(self, who: str) -> APIClient:
        client = APIClient()
        client.force_authenticate(self.people[who])
        return client

    def web(self, who: str) -> Client:
        client = Client()
        client.force_login(self.people[who])
        return client


@pytest.fixture
def world(api: APIClient, new_key: Callable[[str], str]) -> World:
    p, q = new_key("p"), new_key("q")
    for key in (p, q):
        assert api.post("/api/v1/projects/", {
            "key": key, "name": f"Name of {key}",
            "environments": [{"key": "staging", "name": "Staging"},
                             {"key": "production", "name": "Production"}]},
            format="json").status_code == 201
        assert api.post(f"/api/v1/projects/{key}/flags/", {"document": boolean_flag(FLAG)},
                        format="json").status_code == 201
    assert api.post(f"/api/v1/projects/{p}/environments/production/segments/",
                    {"document": {"key": SEGMENT, "name": "VIP", "included": ["u1"]}},
                    format="json").status_code == 201
    assert api.put(f"/api/v1/config/{p}/db", {"value": "pool=10"}, format="json").status_code == 200
    users = get_user_model().objects
    people = {name: users.create_user(name, password=f"{name}-password")
              for name in ("outsider", "viewer", "editor", "manager")}
    prod = ensure_namespace(f"/flags/{p}/production/")
    do_grant(prod, [Perm.READ], to=people["viewer"], by=None)
    do_grant(prod, [Perm.READ, Perm.WRITE], to=people["editor"], by=None)
    do_grant(ensure_namespace(f"/flags/{p}/"), [Perm.READ, Perm.MANAGE], to=people["manager"],
             by=None)
    return World(p, q, people)


# -- REST ---------------------------------------------------------------------------------------

PEOPLE = ("outsider", "viewer", "editor", "manager")

# (method, path template, body, {person: expected status}); {p} is project P.
REST_MATRIX: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
    ("get", "/api/v1/projects/{p}/", None,
     {"outsider": 404, "viewer": 200, "editor": 200, "manager": 200}),
    ("get", "/api/v1/projects/{p}/environments/production/", None,
     {"outsider": 404, "viewer": 200, "editor": 200, "manager": 200}),
    ("get", "/api/v1/projects/{p}/environments/staging/", None,
     {"outsider": 404, "viewer": 404, "editor": 404, "manager": 200}),
    ("get", "/api/v1/projects/{p}/environments/production/flags/" + FLAG + "/", None,
     {"outsider": 404, "viewer": 200, "editor": 200, "manager": 200}),
    ("get", "/api/v1/projects/{p}/environments/staging/flags/" + FLAG + "/", None,
     {"outsider": 404, "viewer": 404, "editor": 404, "manager": 200}),
    ("get", "/api/v1/projects/{p}/flags/" + FLAG + "/", None,
     {"outsider": 404, "viewer": 200, "editor": 200, "manager": 200}),
    ("get", "/api/v1/projects/{p}/environments/production/segments/", None,
     {"outsider": 404, "viewer": 200, "editor": 200, "manager": 200}),
    ("get", "/api/v1/projects/{p}/environments/production/segments/" + SEGMENT + "/", None,
     {"outsider": 404, "viewer": 200, "editor": 200, "manager": 200}),
    ("post", "/api/v1/projects/{p}/environments/production/flags/" + FLAG + "/evaluate/",
     {"context": {"key": "u1"}},
     {"outsider": 404, "viewer": 200, "editor": 200, "manager": 200}),
    ("get", "/api/v1/config/{p}/db", None,
     {"outsider": 404, "viewer": 404, "editor": 404, "manager": 404}),
    ("post", "/api/v1/projects/{p}/environments/production/flags/" + FLAG + "/toggle/",
     {"on": True}, {"outsider": 404, "viewer": 403, "editor": 200, "manager": 403}),
    ("post", "/api/v1/projects/{p}/environments/staging/flags/" + FLAG + "/toggle/",
     {"on": True}, {"outsider": 404, "viewer": 404, "editor": 404, "manager": 403}),
    ("post", "/api/v1/projects/{p}/flags/" + FLAG + "/kill-switch/", {},
     {"outsider": 404, "viewer": 403, "editor": 403, "manager": 403}),
    ("delete", "/api/v1/projects/{p}/flags/" + FLAG + "/", None,
     {"outsider": 404, "viewer": 403, "editor": 403, "manager": 403}),
    ("delete", "/api/v1/projects/{p}/environments/production/segments/" + SEGMENT + "/", None,
     {"outsider": 404, "viewer": 403, "editor": 403, "manager": 403}),
    ("delete", "/api/v1/projects/{p}/", None,
     {"outsider": 404, "viewer": 403, "editor": 403, "manager": 403}),
    ("put", "/api/v1/config/{p}/db", {"value": "x"},
     {"outsider": 404, "viewer": 404, "editor": 404, "manager": 404}),
    ("post", "/api/v1/projects/", {"key": "brand-new-{p}", "name": "x"},
     {"outsider": 403, "viewer": 403, "editor": 403, "manager": 403}),
]


def test_rest_matrix(world: World) -> None:
    failures = []
    for method, template, body, expected in REST_MATRIX:
        path = template.format(p=world.p)
        data = None if body is None else {k: (v.format(p=world.p) if isinstance(v, str) else v)
                                          for k, v in body.items()}
        for who in PEOPLE:
            response = getattr(world.api(who), method)(path, data, format="json")
            if response.status_code != expected[who]:
                failures.append(f"{who} {method.upper()} {path}: {response.status_code} "
                                f"(expected {expected[who]})")
    assert not failures, "\n".join(failures)


def test_lists_name_nothing_outside_the_grants(world: World) -> None:
    outsider, viewer = world.api("outsider"), world.api("viewer")
    assert [x["key"] for x in outsider.get("/api/v1/projects/").json()] == []
    assert [x["key"] for x in viewer.get("/api/v1/projects/").json()] == [world.p]
    assert [e["key"] for e in viewer.get(f"/api/v1/projects/{world.p}/environments/").json()] \
        == ["production"]
    flags = viewer.get(f"/api/v1/projects/{world.p}/flags/").json()
    listed = flags["results"] if isinstance(flags, dict) else flags
    assert [f["key"] for f in listed] == [FLAG]
    assert set(listed[0]["environments"]) == {"production"}
    # Search and counts: only what is granted.
    searched = viewer.get(f"/api/v1/projects/{world.p}/flags/?q=secret").json()
    assert (searched.get("count") if isinstance(searched, dict) else len(searched)) == 1
    assert outsider.get(f"/api/v1/projects/{world.p}/flags/?q=secret").status_code == 404
    config = viewer.get(f"/api/v1/config/?prefix={world.p}/")
    assert config.status_code == 200 and "pool=10" not in config.content.decode()
    assert "pool=10" not in world.api("editor").get(f"/api/v1/config/?prefix={world.p}/") \
        .content.decode()
    assert world.q.encode() not in viewer.get("/api/v1/projects/").content


def test_a_prefix_grant_stops_at_the_segment_boundary(world: World) -> None:
    """A grant on /flags/<p minus its last characters>/ covers no key of project P."""
    do_grant(ensure_namespace(f"/flags/{world.p[:-3]}/"), [Perm.READ, Perm.WRITE],
             to=world.people["outsider"], by=None)
    client = world.api("outsider")
    assert client.get(f"/api/v1/projects/{world.p}/").status_code == 404
    assert [x["key"] for x in client.get("/api/v1/projects/").json()] == []


def test_superuser_sees_everything(world: World) -> None:
    root = get_user_model().objects.create_superuser("root", password="root-password")
    client = APIClient()
    client.force_authenticate(root)
    keys = {x["key"] for x in client.get("/api/v1/projects/").json()}
    assert {world.p, world.q} <= keys
    assert client.get(f"/api/v1/config/{world.p}/db").status_code == 200


def test_group_grants_and_union_of_prefixes(world: World) -> None:
    outsider = world.people["outsider"]
    group = Group.objects.create(name=f"staging-team-{uuid.uuid4().hex[:6]}")
    do_grant(ensure_namespace(f"/flags/{world.p}/staging/"), [Perm.READ], to=group, by=None)
    client = world.api("outsider")
    assert client.get(f"/api/v1/projects/{world.p}/environments/staging/").status_code == 404
    outsider.groups.add(group)
    client = world.api("outsider")
    assert client.get(f"/api/v1/projects/{world.p}/environments/staging/").status_code == 200
    assert client.get(f"/api/v1/projects/{world.p}/environments/production/").status_code == 404
    # A second grant higher up: the union.
    do_grant(ensure_namespace("/config/"), [Perm.READ], to=outsider, by=None)
    assert world.api("outsider").get(f"/api/v1/config/{world.p}/db").status_code == 200
    outsider.groups.remove(group)
    assert world.api("outsider").get(
        f"/api/v1/projects/{world.p}/environments/staging/").status_code == 404


# -- HTML ---------------------------------------------------------------------------------------

HTML_MATRIX: list[tuple[str, str, dict[str, int]]] = [
    ("get", "/projects/{p}/flags/", {"outsider": 404, "viewer": 200, "editor": 200}),
    ("get", "/projects/{p}/flags/" + FLAG + "/", {"outsider": 404, "viewer": 200, "editor": 200}),
    ("post", "/projects/{p}/environments/production/flags/" + FLAG + "/toggle/",
     {"outsider": 404, "viewer": 403, "editor": 302}),
    ("post", "/projects/{p}/environments/staging/flags/" + FLAG + "/toggle/",
     {"outsider": 404, "viewer": 404, "editor": 404}),
    ("post", "/projects/{p}/flags/" + FLAG + "/kill-switch/",
     {"outsider": 404, "viewer": 403, "editor": 403}),
]


def test_html_matrix(world: World) -> None:
    failures = []
    for method, template, expected in HTML_MATRIX:
        path = template.format(p=world.p)
        for who, status in expected.items():
            response = getattr(world.web(who), method)(path, {"on": "true", "confirm": "yes"}
                                                        if method == "post" else None)
            if response.status_code != status:
                failures.append(f"{who} {method.upper()} {path}: {response.status_code} "
                                f"(expected {status})")
    assert not failures, "\n".join(failures)


def test_html_pages_show_no_names_outside_the_grants(world: World) -> None:
    home = world.web("outsider").get("/").content.decode()
    assert world.p not in home and world.q not in home
    for path in ("/config/", f"/config/?prefix={world.p}/", "/audit/", "/access/",
                 "/access/people/", "/access/tokens/"):
        response = world.web("outsider").get(path)
        assert response.status_code in (200, 404), path
        body = response.content.decode()
        assert "pool=10" not in body and FLAG not in body and world.q not in body, path
    viewer_home = world.web("viewer").get("/").content.decode()
    assert world.p in viewer_home and world.q not in viewer_home
    page = world.web("viewer").get(f"/projects/{world.p}/flags/{FLAG}/").content.decode()
    assert "production" in page
    assert f"/environments/staging/flags/{FLAG}/" not in page


# -- tokens are limited by their creator ----------------------------------------------------------


def test_tokens_carry_at_most_their_creators_access(world: World) -> None:
    viewer, editor = world.people["viewer"], world.people["editor"]
    with pytest.raises(AccessDenied):
        do_create_token(created_by=viewer, name="w", kind=TokenKind.AUTOMATION,
                        scope=f"/flags/{world.p}/production/", can_write=True)
    with pytest.raises(AccessDenied):
        do_create_token(created_by=editor, name="wide", kind=TokenKind.AUTOMATION,
                        scope=f"/flags/{world.p}/")
    token, secret = do_create_token(created_by=editor, name="ci", kind=TokenKind.AUTOMATION,
                                    scope=f"/flags/{world.p}/production/", can_write=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    url = f"/api/v1/projects/{world.p}/environments/production/flags/{FLAG}/"
    assert client.post(url + "toggle/", {"on": True}, format="json").status_code == 200
    # The creator loses edit: so does the token, at once.
    do_revoke(Namespace.objects.get(prefix=f"/flags/{world.p}/production/"), [Perm.WRITE],
              frm=editor, by=None)
    assert client.post(url + "toggle/", {"on": False}, format="json").status_code == 403
    do_revoke(Namespace.objects.get(prefix=f"/flags/{world.p}/production/"), [Perm.READ],
              frm=editor, by=None)
    assert client.get(url).status_code == 404
    assert not has_permission(token, Perm.READ, url)


# -- privilege escalation -------------------------------------------------------------------------


def test_no_privilege_escalation_through_grants(world: World) -> None:
    manager, outsider = world.people["manager"], world.people["outsider"]
    project_ns = Namespace.objects.get(prefix=f"/flags/{world.p}/")
    with pytest.raises(AccessDenied):  # manager holds view+manage, not edit
        do_grant(project_ns, [Perm.WRITE], to=outsider, by=manager)
    with pytest.raises(AccessDenied):
        do_grant(project_ns, [Perm.WRITE], to=manager, by=manager)
    with pytest.raises(AccessDenied):
        do_create_namespace(prefix="/", by=manager)
    with pytest.raises(AccessDenied):
        do_create_namespace(prefix=f"/flags/{world.q}/", by=manager)
    q_ns = ensure_namespace(f"/flags/{world.q}/")
    with pytest.raises(AccessDenied):
        do_grant(q_ns, [Perm.READ], to=manager, by=manager)
    with pytest.raises(AccessDenied):  # viewers and editors manage nothing
        do_grant(ensure_namespace(f"/flags/{world.p}/production/"), [Perm.READ], to=outsider,
                 by=world.people["editor"])
    # What the manager holds, the manager may pass on.
    do_grant(project_ns, [Perm.READ], to=outsider, by=manager)
    assert world.api("outsider").get(f"/api/v1/projects/{world.p}/").status_code == 200
    sub = do_create_namespace(prefix=f"/flags/{world.p}/staging/", by=manager)
    assert sub.prefix == f"/flags/{world.p}/staging/"


def test_permission_ui_refuses_escalation_and_404s_foreign_namespaces(world: World) -> None:
    manager_web = world.web("manager")
    project_ns = Namespace.objects.get(prefix=f"/flags/{world.p}/")
    page = manager_web.get(f"/access/namespaces/{project_ns.pk}/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'value="write"' not in body and 'value="read"' in body and "viewer" not in body
    response = manager_web.post(f"/access/namespaces/{project_ns.pk}/grant/",
                                {"kind": "user", "name": "outsider", "perms": ["write"]},
                                follow=True)
    assert "Not granted" in response.content.decode()
    assert world.api("outsider").get(f"/api/v1/projects/{world.p}/").status_code == 404
    foreign = ensure_namespace(f"/flags/{world.q}/")
    for path in (f"/access/namespaces/{foreign.pk}/",):
        assert manager_web.get(path).status_code == 404
    for action in ("grant", "revoke", "delete"):
        assert manager_web.post(f"/access/namespaces/{foreign.pk}/{action}/",
                                {"kind": "user", "name": "manager", "perms": ["read"],
                                 "confirm": "yes"}).status_code == 404
    assert world.web("viewer").get(f"/access/namespaces/{project_ns.pk}/").status_code == 404
    listing = world.web("manager").get("/access/").content.decode()
    assert f"/flags/{world.p}/" in listing and world.q not in listing


def test_grant_and_revoke_through_the_ui_with_confirmation(world: World) -> None:
    manager_web = world.web("manager")
    project_ns = Namespace.objects.get(prefix=f"/flags/{world.p}/")
    granted = manager_web.post(f"/access/namespaces/{project_ns.pk}/grant/",
                               {"kind": "user", "name": "outsider", "perms": ["read"]}, follow=True)
    assert "Granted view" in granted.content.decode()
    assert world.api("outsider").get(f"/api/v1/projects/{world.p}/").status_code == 200
    asked = manager_web.post(f"/access/namespaces/{project_ns.pk}/revoke/",
                             {"kind": "user", "name": "outsider", "perms": ["read"]})
    assert asked.status_code == 200 and 'name="confirm" value="yes"' in asked.content.decode()
    assert world.api("outsider").get(f"/api/v1/projects/{world.p}/").status_code == 200
    done = manager_web.post(f"/access/namespaces/{project_ns.pk}/revoke/",
                            {"kind": "user", "name": "outsider", "perms": ["read"],
                             "confirm": "yes"}, follow=True)
    assert "Revoked" in done.content.decode()
    assert world.api("outsider").get(f"/api/v1/projects/{world.p}/").status_code == 404


def test_permission_management_through_rest(world: World) -> None:
    manager = world.api("manager")
    listed = manager.get("/api/v1/namespaces/").json()
    # Every namespace under what the manager manages, nothing else.
    assert [n["prefix"] for n in listed] == [f"/flags/{world.p}/", f"/flags/{world.p}/production/"]
    assert {"kind": "user", "name": "manager", "perms": ["view", "manage"]} in listed[0]["holders"]
    ns_id = listed[0]["id"]
    url = f"/api/v1/namespaces/{ns_id}/"
    assert manager.post(url + "grants/", {"user": "outsider", "perms": ["edit"]},
                        format="json").status_code == 403
    granted = manager.post(url + "grants/", {"user": "outsider", "perms": ["view"]},
                           format="json")
    assert granted.status_code == 200, granted.content
    assert world.api("outsider").get(f"/api/v1/projects/{world.p}/").status_code == 200
    effective = manager.get("/api/v1/access/effective/?user=outsider").json()
    assert effective["grants"] == [{"prefix": f"/flags/{world.p}/", "perms": ["view"],
                                    "via": "direct"}]
    assert manager.post(url + "revoke/", {"user": "outsider", "perms": ["view"]},
                        format="json").status_code == 200
    assert world.api("outsider").get(f"/api/v1/projects/{world.p}/").status_code == 404
    # Not the manager's: 404; a viewer manages nothing; tokens manage nothing.
    foreign = ensure_namespace(f"/flags/{world.q}/")
    assert manager.get(f"/api/v1/namespaces/{foreign.pk}/").status_code == 404
    assert manager.delete(f"/api/v1/namespaces/{foreign.pk}/").status_code == 404
    assert world.api("viewer").get("/api/v1/namespaces/").json() == []
    assert manager.post("/api/v1/namespaces/", {"prefix": "/config/"},
                        format="json").status_code == 403
    created = manager.post("/api/v1/namespaces/", {"prefix": f"/flags/{world.p}/staging/"},
                           format="json")
    assert created.status_code == 201
    _, secret = do_create_token(created_by=world.people["editor"], name="t",
                                kind=TokenKind.AUTOMATION, scope=f"/flags/{world.p}/production/")
    token_client = APIClient()
    token_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert token_client.get("/api/v1/namespaces/").status_code == 403


def test_group_grant_and_namespace_deletion_through_the_ui(world: World) -> None:
    manager_web = world.web("manager")
    group = Group.objects.create(name=f"qa-{uuid.uuid4().hex[:6]}")
    world.people["outsider"].groups.add(group)
    sub = do_create_namespace(prefix=f"/flags/{world.p}/staging/", by=world.people["manager"])
    granted = manager_web.post(f"/access/namespaces/{sub.pk}/grant/",
                               {"kind": "group", "name": group.name, "perms": ["read"]},
                               follow=True)
    assert f"group:{group.name}" in granted.content.decode()
    staging = f"/api/v1/projects/{world.p}/environments/staging/"
    assert world.api("outsider").get(staging).status_code == 200
    asked = manager_web.post(f"/access/namespaces/{sub.pk}/delete/")
    assert asked.status_code == 200 and "every grant on it" in asked.content.decode()
    assert world.api("outsider").get(staging).status_code == 200
    done = manager_web.post(f"/access/namespaces/{sub.pk}/delete/", {"confirm": "yes"},
                            follow=True)
    assert "deleted" in done.content.decode()
    assert not Namespace.objects.filter(pk=sub.pk).exists()
    assert world.api("outsider").get(staging).status_code == 404


def test_grant_and_token_changes_are_in_the_audit_log(world: World) -> None:
    project_ns = Namespace.objects.get(prefix=f"/flags/{world.p}/")
    manager = world.api("manager")
    assert manager.post(f"/api/v1/namespaces/{project_ns.pk}/grants/",
                        {"user": "outsider", "perms": ["view"]}, format="json").status_code == 200
    editor = world.api("editor")
    created = editor.post("/api/v1/tokens/", {"name": "audited", "kind": "sdk",
                                              "scope": f"{world.p}/production"}, format="json")
    assert created.status_code == 201
    root = get_user_model().objects.create_superuser(f"auditor-{uuid.uuid4().hex[:6]}",
                                                     password="x")
    auditor = APIClient()
    auditor.force_authenticate(root)

    def find(query: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10  # the events are appended in the background
        while True:
            results: list[dict[str, Any]] = auditor.get(f"/api/v1/audit/?{query}").json()["results"]
            if results or time.monotonic() > deadline:
                return results
            time.sleep(0.1)

    grants = find("action=permission.grant&actor=user:manager")
    assert grants and grants[0]["source"] == "api"
    assert grants[0]["detail"]["to"] == "user:outsider"
    assert grants[0]["detail"]["perms"] == ["read"]
    assert grants[0]["key"] == f"/flags/{world.p}/"
    tokens = find("action=token.create&actor=user:editor")
    assert tokens and tokens[0]["detail"]["name"] == "audited"
    assert created.json()["secret"] not in str(tokens[0])


def test_grant_access_command(world: World) -> None:
    import io

    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command("grant_access", f"/flags/{world.p}/staging/", "--user", "outsider",
                 "--perms", "view,edit", stdout=out)
    assert "granted view, edit" in out.getvalue()
    client = world.api("outsider")
    url = f"/api/v1/projects/{world.p}/environments/staging/flags/{FLAG}/"
    assert client.post(url + "toggle/", {"on": True}, format="json").status_code == 200
    call_command("grant_access", f"/flags/{world.p}/staging/", "--user", "outsider",
                 "--perms", "edit", "--revoke", stdout=out)
    assert world.api("outsider").post(url + "toggle/", {"on": False},
                                      format="json").status_code == 403
    with pytest.raises(CommandError):
        call_command("grant_access", "flags/no-slash", "--user", "outsider", "--perms", "view")
    with pytest.raises(CommandError):
        call_command("grant_access", "/flags/", "--user", "nobody-here", "--perms", "view")


def test_effective_access_view(world: World) -> None:
    group = Group.objects.create(name=f"g-{uuid.uuid4().hex[:6]}")
    world.people["viewer"].groups.add(group)
    do_grant(ensure_namespace(f"/flags/{world.p}/staging/"), [Perm.READ], to=group, by=None)
    do_grant(ensure_namespace(f"/flags/{world.q}/"), [Perm.READ], to=world.people["viewer"],
             by=None)
    own = world.web("viewer").get("/access/people/").content.decode()
    assert f"/flags/{world.p}/production/" in own and f"group {group.name}" in own
    assert f"/flags/{world.q}/" in own
    # The manager of P sees the viewer's grants inside P only.
    seen = world.web("manager").get("/access/people/?user=viewer").content.decode()
    assert f"/flags/{world.p}/production/" in seen and world.q not in seen
    assert world.web("outsider").get("/access/people/?user=viewer").status_code == 404


def test_every_access_form_needs_csrf(world: World) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(world.people["manager"])
    project_ns = Namespace.objects.get(prefix=f"/flags/{world.p}/")
    for path in ("/access/", f"/access/namespaces/{project_ns.pk}/grant/",
                 f"/access/namespaces/{project_ns.pk}/revoke/",
                 f"/access/namespaces/{project_ns.pk}/delete/", "/access/tokens/"):
        assert strict.post(path, {"kind": "user", "name": "outsider", "perms": ["read"],
                                  "confirm": "yes"}).status_code == 403, path


def test_token_ui_shows_the_secret_once(world: World) -> None:
    web = world.web("editor")
    created = web.post("/access/tokens/", {"name": "deploy", "kind": "automation",
                                           "scope": f"/flags/{world.p}/production/"})
    assert created.status_code == 201
    body = created.content.decode()
    secret = body.split('class="token-secret">')[1].split("<")[0]
    assert secret.startswith("fs_automation_")
    listing = web.get("/access/tokens/").content.decode()
    assert secret not in listing and "deploy" in listing and "never" in listing
    refused = web.post("/access/tokens/", {"name": "too-wide", "kind": "automation",
                                           "scope": "/"}, follow=True)
    assert "Token not created" in refused.content.decode()


# -- login lockout and security settings ----------------------------------------------------------


def test_login_lockout_after_repeated_failures(world: World, settings: Any) -> None:
    settings.FLAGSTAFF_LOGIN_MAX_FAILURES = 3
    cache.clear()
    try:
        browser = Client()
        for _ in range(3):
            failed = browser.post("/accounts/login/", {"username": "viewer", "password": "wrong"})
            assert failed.status_code == 200 and "_auth_user_id" not in browser.session
        locked = browser.post("/accounts/login/", {"username": "viewer",
                                                   "password": "viewer-password"})
        assert locked.status_code == 200 and "_auth_user_id" not in browser.session
        assert "too many failed logins" in locked.content.decode()
        exchange = APIClient().post("/api/v1/auth/token/", {"username": "viewer",
                                                            "password": "viewer-password"},
                                    format="json")
        assert exchange.status_code == 429
        # Someone else still logs in.
        ok = browser.post("/accounts/login/", {"username": "editor", "password": "editor-password"})
        assert ok.status_code == 302
        root = get_user_model().objects.create_superuser(f"auditor-{uuid.uuid4().hex[:6]}",
                                                         password="x")
        auditor = APIClient()
        auditor.force_authenticate(root)
        deadline = time.monotonic() + 10  # audit events are appended in the background
        while True:
            refusals = auditor.get("/api/v1/audit/?action=login.locked_out&actor=user:viewer") \
                .json()["results"]
            if len(refusals) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert {r["source"] for r in refusals} == {"ui", "api"}
        assert refusals[0]["detail"]["locked"] == "account"
    finally:
        cache.clear()


def test_security_headers(world: World) -> None:
    response = Client().get("/accounts/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_deploy_check_passes_with_production_settings(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings", "DEBUG": "0",
                "ALLOWED_HOSTS": "flags.example.com", "SECRET_KEY": "x" * 20 + uuid.uuid4().hex * 2,
                "FLAGSTAFF_VAR_DIR": str(tmp_path)})
    checked = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--tag",
                              "security", "--fail-level", "WARNING"], capture_output=True, text=True, env=env, timeout=120,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                 os.path.abspath(__file__)))))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- websockets ---------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def channel_layer(request: pytest.FixtureRequest, settings: Any) -> None:
    """The Channels layer: in memory, and Redis as in production (sync: settings reset the gateway)."""
    if request.param == "redis":
        settings.CHANNEL_LAYERS = {"default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"],
                       "prefix": f"flagstaff-access-{uuid.uuid4().hex[:8]}"}}}
    else:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.FLAGSTAFF_LIVE_HEARTBEAT_SECONDS = 30.0


async def _socket(cookie_user: Any) -> Any:
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from flagstaff_platform.asgi import application

    def login() -> str:
        client = Client()
        client.force_login(cookie_user)
        return f"sessionid={client.cookies['sessionid'].value}"

    cookie = await sync_to_async(login)()
    ws = WebsocketCommunicator(application, "/ws/v1/flags/", headers=[
        (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
    connected, _ = await ws.connect(timeout=10)
    assert connected
    return ws


async def _next(ws: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no message before the deadline"
        message: dict[str, Any] = await ws.receive_json_from(timeout=remaining)
        if message["type"] != "heartbeat":
            return message


async def _subscribe(ws: Any, project: str, environment: str) -> dict[str, Any]:
    await ws.send_json_to({"type": "subscribe", "project": project, "environment": environment})
    while True:
        message = await _next(ws)
        if message["type"] in ("subscribed", "error"):
            return message


@pytest.mark.django_db(transaction=True)
async def test_websocket_matrix_and_revocation_on_an_open_socket(
        channel_layer: None, world_async: World) -> None:
    from asgiref.sync import sync_to_async
    from django.db import connections

    from flags.core import core
    from flags.live.relay import stop_relay

    world = world_async
    sockets = []
    try:
        outsider = await _socket(world.people["outsider"])
        viewer = await _socket(world.people["viewer"])
        sockets += [outsider, viewer]
        refused = await _subscribe(outsider, world.p, "production")
        assert refused["type"] == "error" and refused["code"] == "not_found"
        assert (await _subscribe(viewer, world.p, "staging"))["code"] == "not_found"
        assert (await _subscribe(viewer, world.p, "production"))["type"] == "subscribed"

        # The grant goes: the open socket is told at once and hears nothing more.
        namespace = await sync_to_async(Namespace.objects.get)(
            prefix=f"/flags/{world.p}/production/")
        await sync_to_async(do_revoke)(namespace, [Perm.READ], frm=world.people["viewer"],
                                       by=None)
        dropped = await _next(viewer)
        assert dropped == {"type": "error", "code": "not_found", "project": world.p,
                           "environment": "production", "message": dropped["message"]}
        editor_api = APIClient()
        editor_api.force_authenticate(world.people["editor"])
        toggled = await sync_to_async(editor_api.post)(
            f"/api/v1/projects/{world.p}/environments/production/flags/{FLAG}/toggle/",
            {"on": True}, format="json")
        assert toggled.status_code == 200
        # No event of it reaches the socket: the next message is the answer to a new
        # subscribe, which is refused too.
        await viewer.send_json_to({"type": "subscribe", "project": world.p,
                                   "environment": "production"})
        answer = await _next(viewer)
        assert answer["type"] == "error" and answer["code"] == "not_found", answer
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.disconnect(timeout=10)
        await stop_relay()
        await core().aclose()
        await sync_to_async(connections.close_all)()


@pytest.fixture
def world_async(world: World) -> World:
    """The world, for async tests (its fixtures are sync)."""
    return world
