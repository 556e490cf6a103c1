"""Fixtures for the platform tests: a real 3-member Flagstaff core, Postgres, and API clients.

The core cluster is started once per session (``tests/cluster/harness.py``)
and the platform's gateway is pointed at it, so every test drives the whole
stack: REST view -> access/actions -> ``flags.core`` -> gRPC -> Raft -> apply.
Tests share the cluster but each works in projects of its own (``new_key``).
This folder has no ``__init__.py`` on purpose: a package named ``platform``
would shadow the standard library's ``platform`` module.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from platform_support import boolean_flag, grant_editor
from rest_framework.test import APIClient

from tests.cluster.harness import Cluster


@pytest.fixture
def new_key() -> Callable[[str], str]:
    """A fresh key for a project (or anything) this test owns: ``new_key("p")`` -> ``p-1a2b3c4d``."""
    return lambda prefix="p": f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def user(db: Any) -> Any:
    """alice: an editor (view, edit, delete) of the whole key space."""
    from django.contrib.auth import get_user_model

    alice = get_user_model().objects.create_user("alice", password="alice-password")
    grant_editor(alice)
    return alice


@pytest.fixture
def api(core_cluster: Cluster, user: Any) -> APIClient:
    """An API client authenticated with alice's automation token over the whole key space."""
    from flags.tokens import TokenKind, do_create_token

    client = APIClient()
    _, secret = do_create_token(created_by=user, name="tests", kind=TokenKind.AUTOMATION,
                                scope="/", can_write=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def other_api(core_cluster: Cluster, db: Any) -> APIClient:
    """A second person (bob), logged in with a session: the concurrent editor."""
    from django.contrib.auth import get_user_model

    grant_editor(get_user_model().objects.create_user("bob", password="bob-password"))
    client = APIClient(enforce_csrf_checks=False)
    assert client.login(username="bob", password="bob-password")
    return client


@pytest.fixture
def project(api: APIClient, new_key: Callable[[str], str]) -> str:
    """A new project with environments ``staging`` and ``production``; its key."""
    key = new_key("p")
    response = api.post("/api/v1/projects/", {
        "key": key, "name": f"Project {key}",
        "environments": [{"key": "staging", "name": "Staging"},
                         {"key": "production", "name": "Production"}],
    }, format="json")
    assert response.status_code == 201, response.content
    return key


@pytest.fixture
def flag(api: APIClient, project: str) -> str:
    """A boolean flag ``new-checkout`` in both environments of ``project``; its key."""
    response = api.post(f"/api/v1/projects/{project}/flags/",
                        {"document": boolean_flag("new-checkout")}, format="json")
    assert response.status_code == 201, response.content
    return "new-checkout"
