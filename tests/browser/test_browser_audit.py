"""The audit log in headless Chromium: an editor's change appears in the audit view with a diff.

alice toggles a flag on its page, follows the flag's "Audit log" link and
finds her change (actor, source, reason) with the before/after diff; the
record's own page shows the same diff. Runs against daphne, a real core and Postgres.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flags.actions import do_create_flag, do_create_project
from flags.core import Actor

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def project(web_server: str, new_key: Callable[[str], str]) -> str:
    key = new_key("audit")
    record = do_create_project(key=key, name="Audit shop", description="",
                               environments=[{"key": "staging", "name": "Staging"}],
                               actor=Actor.system("tests"))
    document = {"key": "dark-mode", "name": "Dark mode", "kind": "boolean",
                "variations": [True, False], "on": False, "off_variation": 1,
                "fallthrough": {"variation": 1}}
    do_create_flag(record, document, actor=Actor.system("tests"))
    return key


@pytest.fixture
def alice(django_user_model: Any) -> tuple[str, str]:
    from flags.namespaces import do_grant, ensure_namespace
    from flags.permissions import Perm

    person = django_user_model.objects.create_user("alice", password="alice-password")
    do_grant(ensure_namespace("/"), [Perm.READ, Perm.WRITE], to=person, by=None)
    return ("alice", "alice-password")


def test_an_editors_change_appears_in_the_audit_view_with_a_diff(
    web_server: str, project: str, alice: tuple[str, str], browser: Any,
    screenshot: Callable[[Any, str], Path],
) -> None:
    base = web_server
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(10_000)
    page.goto(base + "/accounts/login/?next=/")
    page.fill("#id_username", alice[0])
    page.fill("#id_password", alice[1])
    page.click("form.login button[type=submit]")
    page.wait_for_url(base + "/")

    page.goto(f"{base}/projects/{project}/flags/")
    page.locator('tr[data-flag="dark-mode"] td[data-environment="staging"] button').click()
    page.wait_for_selector("ul.messages li.success")

    page.goto(f"{base}/projects/{project}/flags/dark-mode/")
    page.click("p.audit-link a")
    page.wait_for_selector("tr.audit-record")
    newest = page.locator("tr.audit-record").first
    assert newest.locator("td.actor").inner_text().startswith("user:alice")
    assert newest.locator("td.source").inner_text() == "ui"
    added = newest.locator("pre.diff span.diff-add").all_inner_texts()
    removed = newest.locator("pre.diff span.diff-del").all_inner_texts()
    assert '+  "on": true,' in added and '-  "on": false,' in removed
    # The creation by the test's job is there too, older, with no "before".
    assert page.locator('tr.audit-record td.actor:has-text("system:tests")').count() >= 1
    screenshot(page, "audit-01-flag-history")

    newest.locator("td a").first.click()
    page.wait_for_selector("dl.audit-meta")
    assert page.inner_text("dd.actor") == "user:alice"
    assert '+  "on": true,' in page.locator("pre.diff span.diff-add").all_inner_texts()
    screenshot(page, "audit-02-record")
    page.context.close()
