"""The flag editor in headless Chromium against daphne, a real core and Postgres.

A person logs in, creates a flag, toggles it, changes its rollout with the
slider's exact number field, meets a concurrent edit as a conflict, and uses
the kill switch. Screenshots land in var/screenshots/ for people to look at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser_support import off_loop

from flags import keyspace
from flags.actions import do_create_project
from flags.core import Actor, core

pytestmark = pytest.mark.django_db(transaction=True)

MARKUP_NAME = 'Checkout <img src=x onerror="alert(1)"> v2'


def _stored(project: str, env: str, flag: str) -> dict[str, Any]:
    """The flag document as the core holds it (read outside Playwright's event loop)."""
    entry = off_loop(core().get, keyspace.flag_key(project, env, flag))
    assert entry is not None
    doc = entry.json()
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def project(web_server: str, new_key: Callable[[str], str]) -> str:
    """A project with environments staging and production (created before the browser starts)."""
    key = new_key("shop")
    do_create_project(key=key, name="Shop", description="The web shop",
                      environments=[{"key": "staging", "name": "Staging"},
                                    {"key": "production", "name": "Production"}],
                      actor=Actor.system("tests"))
    return key


@pytest.fixture
def people(django_user_model: Any) -> dict[str, tuple[str, str]]:
    """alice and bob, editors of everything, with their passwords (committed: daphne's process must see them)."""
    from flags.namespaces import do_grant, ensure_namespace
    from flags.permissions import Perm

    for name in ("alice", "bob"):
        person = django_user_model.objects.create_user(name, password=f"{name}-password")
        do_grant(ensure_namespace("/"), [Perm.READ, Perm.WRITE, Perm.DELETE], to=person, by=None)
    return {name: (name, f"{name}-password") for name in ("alice", "bob")}


def _log_in(browser: Any, base: str, who: tuple[str, str],
            shoot: Callable[[Any, str], Path] | None = None) -> Any:
    """A new browser context with ``who`` logged in through the login form; its page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    page.goto(base + "/accounts/login/?next=/")
    if shoot is not None:
        shoot(page, "01-login")
    page.fill("#id_username", who[0])
    page.fill("#id_password", who[1])
    page.click("form.login button[type=submit]")
    page.wait_for_url(base + "/")
    return page


def test_log_in_create_toggle_and_roll_out(
    web_server: str, project: str, people: dict[str, tuple[str, str]], browser: Any,
    screenshot: Callable[[Any, str], Path],
) -> None:
    base = web_server
    page = _log_in(browser, base, people["alice"], screenshot)
    assert page.locator("text=Log out").count() == 1
    page.click(f'li[data-project="{project}"] a')
    page.wait_for_url(f"{base}/projects/{project}/flags/")

    # Create a flag from the list (its name has markup: it must show as text).
    page.click("details.create summary")
    page.fill('input[name="key"]', "new-checkout")
    page.fill('input[name="name"]', MARKUP_NAME)
    page.fill('input[name="tags"]', "checkout, q3")
    page.click("text=Create flag")
    page.wait_for_url(f"{base}/projects/{project}/flags/new-checkout/")
    assert page.inner_text("h1.flag-title") == MARKUP_NAME
    assert page.locator("h1.flag-title img").count() == 0
    assert _stored(project, "staging", "new-checkout")["on"] is False

    # Toggle it on in staging from the list.
    page.goto(f"{base}/projects/{project}/flags/")
    cell = page.locator('tr[data-flag="new-checkout"] td[data-environment="staging"] button')
    assert cell.inner_text() == "Off"
    cell.click()
    page.wait_for_selector("ul.messages li.success")
    cell = page.locator('tr[data-flag="new-checkout"] td[data-environment="staging"] button')
    assert cell.inner_text() == "On"
    assert _stored(project, "staging", "new-checkout")["on"] is True
    assert _stored(project, "production", "new-checkout")["on"] is False
    screenshot(page, "02-flag-list")

    # Roll it out: the slider follows the exact number field, the save sends the loaded revision.
    page.click('tr[data-flag="new-checkout"] a.flag-name')
    page.wait_for_url(f"{base}/projects/{project}/flags/new-checkout/")
    page.goto(f"{base}/projects/{project}/flags/new-checkout/?env=staging")
    page.fill('form.rollout input[name="percentage"]', "12.345")
    assert page.input_value('form.rollout input[type="range"]') == "12.345"
    page.locator('form.rollout input[type="range"]').fill("40")
    assert page.input_value('form.rollout input[name="percentage"]') == "40"
    page.fill('form.rollout input[name="percentage"]', "12.345")
    page.click("text=Save rollout")
    page.wait_for_selector("ul.messages li.success")
    slices = _stored(project, "staging", "new-checkout")["fallthrough"]["rollout"]["variations"]
    assert slices == [{"variation": 0, "weight": 12345}, {"variation": 1, "weight": 87655}]
    assert page.input_value('form.rollout input[name="percentage"]') == "12.345"

    # The preview runs the engine for a context.
    page.fill('form.preview textarea[name="context"]', '{"key": "user-42"}')
    page.click("text=Evaluate")
    assert page.inner_text(".preview-reason").startswith("FALLTHROUGH")
    screenshot(page, "03-flag-page")

    # The kill switch asks first, then turns every environment off.
    page.check('form.kill-switch input[name="confirm"]')
    page.click("text=Kill switch")
    page.wait_for_selector("ul.messages li.warning")
    assert page.dialogs and "EVERY environment" in page.dialogs[-1]  # type: ignore[attr-defined]
    assert _stored(project, "staging", "new-checkout")["on"] is False
    assert not [d for d in page.dialogs if d == "1"]  # type: ignore[attr-defined]
    page.context.close()


def test_a_concurrent_edit_is_shown_as_a_conflict(
    web_server: str, project: str, people: dict[str, tuple[str, str]], browser: Any,
    screenshot: Callable[[Any, str], Path],
) -> None:
    base = web_server
    alice = _log_in(browser, base, people["alice"])
    bob = _log_in(browser, base, people["bob"])
    alice.goto(f"{base}/projects/{project}/flags/")
    alice.click("details.create summary")
    alice.fill('input[name="key"]', "search-v2")
    alice.click("text=Create flag")
    alice.wait_for_url(f"{base}/projects/{project}/flags/search-v2/")

    url = f"{base}/projects/{project}/flags/search-v2/?env=production"
    alice.goto(url)
    bob.goto(url)
    bob.fill('form.rollout input[name="percentage"]', "50")
    started = time.monotonic()
    bob.click("text=Save rollout")
    # Alice's page follows the flag over the websocket: it says someone else changed it.
    alice.wait_for_selector("#live-notice:not([hidden])")
    print(f"bob's save -> alice's page updated live: {time.monotonic() - started:.3f} s")
    assert "changed in production" in alice.inner_text("#live-notice")
    screenshot(alice, "04-live-update")
    bob.wait_for_selector("ul.messages li.success")

    # Alice's page still holds the revision it loaded: her save comes back as a conflict.
    alice.fill('form.rollout input[name="percentage"]', "5")
    alice.click("text=Save rollout")
    alice.wait_for_selector("#conflict")
    assert "Someone else saved this flag first" in alice.inner_text("#conflict")
    assert alice.inner_text("#conflict td.theirs") == "50%"
    assert alice.inner_text("#conflict td.mine") == "5%"
    weight = _stored(project, "production", "search-v2")["fallthrough"]["rollout"]["variations"]
    assert weight[0]["weight"] == 50000, "bob's save was not overwritten"
    screenshot(alice, "05-conflict")

    # Take theirs: the page shows bob's rollout.
    alice.click("text=Take theirs")
    alice.wait_for_url(url)
    assert alice.input_value('form.rollout input[name="percentage"]') == "50"

    # The same race in the document editor, resolved with "keep mine" after seeing theirs
    # (both pages are fresh: bob's after his save, alice's after taking his change).
    text = alice.input_value('form.document-editor textarea[name="document"]')
    alice.fill('form.document-editor textarea[name="document"]',
               text.replace('"name": "search-v2"', '"name": "Search v2 (alice)"'))
    bob_text = bob.input_value('form.document-editor textarea[name="document"]')
    bob.fill('form.document-editor textarea[name="document"]',
             bob_text.replace('"name": "search-v2"', '"name": "Search v2 (bob)"'))
    bob.click("text=Save document")
    bob.wait_for_selector("ul.messages li.success")
    alice.click("text=Save document")
    alice.wait_for_selector("#conflict")
    assert "Search v2 (bob)" in alice.inner_text("#conflict td.theirs")
    assert "Search v2 (alice)" in alice.inner_text("#conflict td.mine")
    assert _stored(project, "production", "search-v2")["name"] == "Search v2 (bob)"
    screenshot(alice, "06-document-conflict")
    alice.click("text=Keep mine")
    alice.wait_for_selector("ul.messages li.success")
    assert _stored(project, "production", "search-v2")["name"] == "Search v2 (alice)"
    alice.context.close()
    bob.context.close()
