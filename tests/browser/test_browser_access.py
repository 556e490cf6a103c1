"""Access control in headless Chromium: a person without a grant does not see the flag anywhere.

dave has no grant on project P: its flag is nowhere in what his browser
shows — not on the start page, not in another project's flag list or search,
not on the config page, not in the audit log, and P's pages are 404s. Then an
administrator grants him view through the /access/ pages, he sees the flag,
and a revoke (confirmed on its own page) hides it again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flags.actions import do_create_flag, do_create_project
from flags.core import Actor

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_FLAG = "zebra-launch"


def _flag_document(key: str) -> dict[str, Any]:
    return {"key": key, "name": "Zebra launch", "kind": "boolean", "variations": [True, False],
            "on": False, "off_variation": 1, "fallthrough": {"variation": 1}}


@pytest.fixture
def projects(web_server: str, new_key: Callable[[str], str]) -> tuple[str, str]:
    """P holds the secret flag; Q (which dave may view) holds another."""
    p, q = new_key("hidden"), new_key("open")
    records = [do_create_project(key=key, name=f"Project {key}", description="",
                                 environments=[{"key": "production", "name": "Production"}],
                                 actor=Actor.system("tests")) for key in (p, q)]
    do_create_flag(records[0], _flag_document(SECRET_FLAG), actor=Actor.system("tests"))
    do_create_flag(records[1], _flag_document("other-flag") | {"name": "Other"},
                   actor=Actor.system("tests"))
    return p, q


@pytest.fixture
def people(django_user_model: Any, projects: tuple[str, str]) -> None:
    """dave (view on Q only) and admin (a superuser)."""
    from flags.namespaces import do_grant, ensure_namespace
    from flags.permissions import Perm

    dave = django_user_model.objects.create_user("dave", password="dave-password")
    do_grant(ensure_namespace(f"/flags/{projects[1]}/"), [Perm.READ], to=dave, by=None)
    django_user_model.objects.create_superuser("admin", password="admin-password")


def _log_in(browser: Any, base: str, who: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(base + "/accounts/login/?next=/")
    page.fill("#id_username", who)
    page.fill("#id_password", f"{who}-password")
    page.click("form.login button[type=submit]")
    page.wait_for_url(base + "/")
    return page


def _nowhere(page: Any, base: str, p: str, q: str) -> None:
    """The secret flag and its project appear on none of the pages dave can reach."""
    for path in ("/", f"/projects/{q}/flags/", f"/projects/{q}/flags/?q=zebra", "/config/",
                 "/audit/", "/access/", "/access/people/"):
        response = page.goto(base + path)
        assert response is not None and response.status < 500, path
        text = page.content()
        assert SECRET_FLAG not in text and p not in text, path
    for path in (f"/projects/{p}/flags/", f"/projects/{p}/flags/{SECRET_FLAG}/"):
        response = page.goto(base + path)
        assert response is not None and response.status == 404, path
        assert SECRET_FLAG not in page.content() or path.endswith(f"{SECRET_FLAG}/")


def test_a_person_without_a_grant_sees_the_flag_nowhere_until_granted(
        web_server: str, projects: tuple[str, str], people: None, browser: Any,
        screenshot: Callable[[Any, str], Path]) -> None:
    p, q = projects
    base = web_server
    dave = _log_in(browser, base, "dave")
    assert q in dave.content()
    _nowhere(dave, base, p, q)
    screenshot(dave, "access-01-dave-without-grant")

    # The administrator creates the namespace and grants dave view through the UI.
    admin = _log_in(browser, base, "admin")
    admin.goto(base + "/access/")
    admin.fill("input[name=prefix]", f"/flags/{p}/")
    admin.fill("input[name=description]", "the hidden project")
    admin.click("form.stacked button[type=submit]")
    admin.wait_for_selector("form.grant")
    admin.select_option("form.grant select[name=kind]", "user")
    admin.fill("form.grant input[name=name]", "dave")
    admin.check("form.grant input[value=read]")
    admin.click("form.grant button[type=submit]")
    admin.wait_for_selector("tr[data-holder='user:dave']")
    screenshot(admin, "access-02-namespace-granted")

    dave.goto(f"{base}/projects/{p}/flags/")
    assert SECRET_FLAG in dave.content()

    # Revoke, confirmed on its own page: the flag is gone again.
    admin.click("tr[data-holder='user:dave'] button[type=submit]")
    admin.wait_for_selector("form.confirm")
    assert "dave" in admin.inner_text("p.question")
    screenshot(admin, "access-03-confirm-revoke")
    admin.click("form.confirm button[type=submit]")
    admin.wait_for_selector("ul.messages")
    assert admin.locator("tr[data-holder='user:dave']").count() == 0
    _nowhere(dave, base, p, q)
