"""The editor's newer parts in headless Chromium against daphne, a real core and Postgres.

Rules reordered with the move buttons and by dragging, the history panel,
the config tree, and a second browser showing "changed by <user>" live. The
live test also prints the time from a save in one browser to the update in the
other (a measurement, never asserted):

    .venv/bin/pytest -s -p no:cacheprovider tests/browser/test_browser_editor_more.py -k changed_by
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser_support import off_loop

from flags import keyspace
from flags.actions import do_create_flag, do_create_project, do_put_config
from flags.core import Actor, core

pytestmark = pytest.mark.django_db(transaction=True)

LIVE_SAMPLES = 10
XSS = '<img src=x onerror="window.__xss=1">'


def _rule(rule_id: str, domain: str) -> dict[str, Any]:
    return {"id": rule_id, "description": f"people at {domain}",
            "clauses": [{"attribute": "email", "operator": "ends_with", "values": [domain]}],
            "variation": 0}


def _stored(project: str, env: str, flag: str) -> dict[str, Any]:
    entry = off_loop(core().get, keyspace.flag_key(project, env, flag))
    assert entry is not None
    doc = entry.json()
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def project(web_server: str, new_key: Callable[[str], str]) -> str:
    """A project (staging, production) with flag ``beta`` (rules a, b, c), made before the browser."""
    key = new_key("shop")
    record = do_create_project(key=key, name="Shop", environments=[
        {"key": "staging", "name": "Staging"}, {"key": "production", "name": "Production"}],
        actor=Actor.system("tests"))
    do_create_flag(record, {
        "key": "beta", "name": XSS, "kind": "boolean", "variations": [True, False], "on": False,
        "off_variation": 1, "fallthrough": {"variation": 1},
        "rules": [_rule(i, f"@{i}.example") for i in "abc"],
    }, actor=Actor.system("tests"))
    return key


@pytest.fixture
def people(django_user_model: Any) -> dict[str, tuple[str, str]]:
    """alice and bob, administrators (every key: these tests are about the editor, not grants)."""
    for name in ("alice", "bob"):
        django_user_model.objects.create_superuser(name, password=f"{name}-password")
    return {name: (name, f"{name}-password") for name in ("alice", "bob")}


def _log_in(browser: Any, base: str, who: tuple[str, str]) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto(base + "/accounts/login/?next=/")
    page.fill("#id_username", who[0])
    page.fill("#id_password", who[1])
    page.click("form.login button[type=submit]")
    page.wait_for_url(base + "/")
    return page


def _rule_order(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("ol.rules li.rule", "els => els.map(e => e.dataset.ruleId)"))


def test_rules_reorder_by_buttons_and_drag_and_the_history_panel(
    web_server: str, project: str, people: dict[str, tuple[str, str]], browser: Any,
    screenshot: Callable[[Any, str], Path],
) -> None:
    base = web_server
    page = _log_in(browser, base, people["alice"])
    url = f"{base}/projects/{project}/flags/beta/?env=production"
    page.goto(url)
    assert _rule_order(page) == ["a", "b", "c"]
    page.click('button[aria-label="Move rule b up"]')
    page.wait_for_selector("ul.messages li.success")
    assert _rule_order(page) == ["b", "a", "c"]
    assert [r["id"] for r in _stored(project, "production", "beta")["rules"]] == ["b", "a", "c"]
    page.click('button[aria-label="Move rule b down"]')
    page.wait_for_selector("ul.messages li.success")
    assert [r["id"] for r in _stored(project, "production", "beta")["rules"]] == ["a", "b", "c"]

    # Drag rule c onto rule a: c goes first, saved with the loaded revision.
    page.locator('li.rule[data-rule-id="c"]').drag_to(page.locator('li.rule[data-rule-id="a"]'))
    page.wait_for_selector("ul.messages li.success")
    assert _rule_order(page) == ["c", "a", "b"]
    assert [r["id"] for r in _stored(project, "production", "beta")["rules"]] == ["c", "a", "b"]
    assert [r["id"] for r in _stored(project, "staging", "beta")["rules"]] == ["a", "b", "c"]

    # The history panel: newest first, each with who and what changed.
    history = page.locator("#history li.version")
    assert history.count() == 4
    newest = history.nth(0)
    assert "user:alice" in newest.locator(".updated-by").inner_text()
    assert newest.locator("tr.op-reordered").count() == 1
    assert newest.locator("tr.op-reordered td.before").inner_text() == "a, b, c"
    assert newest.locator("tr.op-reordered td.after").inner_text() == "c, a, b"
    assert "Created the flag." in history.nth(3).inner_text()
    assert "system:tests" in history.nth(3).locator(".updated-by").inner_text()
    # The flag's name is markup: shown as text, never run.
    assert page.inner_text("h1.flag-title") == XSS
    assert page.evaluate("window.__xss") is None
    page.locator("#history").scroll_into_view_if_needed()
    screenshot(page, "07-rules-and-history")
    page.context.close()


@pytest.fixture
def config_top(web_server: str, new_key: Callable[[str], str]) -> str:
    """Config keys <top>/db/host, <top>/db/port and <top>/banner (markup); <top>."""
    top = new_key("svc")
    for path, value in [(f"{top}/db/host", "db.internal"), (f"{top}/db/port", "5432"),
                        (f"{top}/banner", XSS)]:
        do_put_config(path, value, actor=Actor.system("tests"))
    return top


def test_config_tree_browse_edit_create_delete(
    web_server: str, people: dict[str, tuple[str, str]], config_top: str,
    browser: Any, screenshot: Callable[[Any, str], Path],
) -> None:
    top = config_top
    base = web_server
    page = _log_in(browser, base, people["bob"])
    page.goto(base + "/")
    page.click("text=Config keys")
    page.wait_for_url(base + "/config/")
    folder = page.locator(f'li.folder[data-path="{top}/db"] > details')
    assert folder.get_attribute("open") is None  # collapsed until opened
    page.click(f'li.folder[data-path="{top}/db"] > details > summary')
    assert folder.get_attribute("open") is not None
    page.click(f'li[data-path="{top}/db/port"] a.leaf')
    page.wait_for_selector("section.config-edit")
    assert page.inner_text("code.config-path") == f"{top}/db/port"
    page.fill('form.config-save textarea[name="value"]', "6432")
    page.click("form.config-save button[type=submit]")
    page.wait_for_selector("ul.messages li.success")
    port = off_loop(core().get, keyspace.config_key(f"{top}/db/port"))
    assert port is not None and port.value == b"6432"
    assert port.version == 2

    # A new key under the open folder; the banner's markup shows as text.
    page.fill('section.config-create input[name="path"]', f"{top}/db/user")
    page.fill('section.config-create textarea[name="value"]', "app")
    page.click("text=Create key")
    page.wait_for_selector("ul.messages li.success")
    assert page.locator(f'li[data-path="{top}/db/user"]').count() == 1
    assert XSS in page.inner_text(f'li[data-path="{top}/banner"] .value-preview')
    assert page.evaluate("window.__xss") is None
    page.click("button.expand-all")
    screenshot(page, "08-config-tree")

    # Delete (after a confirmation dialog).
    page.click("text=Delete key")
    page.wait_for_selector("ul.messages li.success")
    assert off_loop(core().get, keyspace.config_key(f"{top}/db/user")) is None
    page.context.close()


def test_a_second_browser_shows_changed_by_live(
    web_server: str, project: str, people: dict[str, tuple[str, str]], browser: Any,
    screenshot: Callable[[Any, str], Path],
) -> None:
    """bob toggles in his browser; alice's flag list flips and says "changed by user:bob"."""
    base = web_server
    alice = _log_in(browser, base, people["alice"])
    bob = _log_in(browser, base, people["bob"])
    # bob's pages note (in the tab's session storage) when a form is submitted.
    bob.context.add_init_script(
        "document.addEventListener('submit', () => sessionStorage.setItem('submittedAt', "
        "String(Date.now())), true);")
    list_url = f"{base}/projects/{project}/flags/"
    alice.goto(list_url)
    alice.wait_for_function("document.body.dataset.live === 'subscribed'")
    bob.goto(list_url)
    cell = 'tr[data-flag="beta"] td[data-environment="staging"]'
    samples = []
    for i in range(LIVE_SAMPLES):
        expected = "On" if i % 2 == 0 else "Off"
        # alice's page notes when its toggle for beta/staging flips to the expected state.
        alice.evaluate(
            """([sel, want]) => { window.__seenAt = null; const cell = document.querySelector(sel);
                 const obs = new MutationObserver(() => {
                   if (cell.querySelector('button.switch').textContent === want && !window.__seenAt) {
                     window.__seenAt = Date.now(); obs.disconnect(); } });
                 obs.observe(cell, {subtree: true, childList: true, characterData: true}); }""",
            [cell, expected])
        bob.click(f"{cell} button.switch")
        bob.wait_for_selector(f"{cell} button.switch:text-is('{expected}')")
        alice.wait_for_function("window.__seenAt !== null")
        submitted = int(bob.evaluate("sessionStorage.getItem('submittedAt')"))
        samples.append(int(alice.evaluate("window.__seenAt")) - submitted)
        assert alice.inner_text(f"{cell} button.switch") == expected
    change = alice.inner_text('tr[data-flag="beta"] .last-change')
    assert change == "changed by user:bob in staging"
    assert _stored(project, "staging", "beta")["updated_by"] == "user:bob"
    screenshot(alice, "09-changed-by-live")
    ordered = sorted(samples)
    print(f"\nsave in browser 1 -> update shown in browser 2, {len(samples)} samples (ms): {samples}; "
          f"p50 {statistics.median(ordered):.0f} ms, max {ordered[-1]} ms")

    # On the flag page the notice names the person too.
    alice.goto(f"{base}/projects/{project}/flags/beta/?env=production")
    alice.wait_for_function("document.body.dataset.live === 'subscribed'")
    bob.goto(f"{base}/projects/{project}/flags/beta/?env=production")
    bob.click('tr[data-environment="production"] button.switch')
    alice.wait_for_selector("#live-notice:not([hidden])")
    assert "changed in production by user:bob" in alice.inner_text("#live-notice")
    assert alice.inner_text('tr[data-environment="production"] .updated-by') == "by user:bob"
    alice.context.close()
    bob.context.close()
