"""The browser client (flagstaff-client.js) in headless Chromium with a real browser key.

The page is not the platform's (``about:blank`` plus the script from the web
process): a product team embedding the client on its own site. It receives
evaluated values, follows a change saved elsewhere, and never sees rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from browser_support import off_loop

from flags.actions import do_create_flag, do_create_project, do_toggle_flag
from flags.core import Actor
from flags.tokens import TokenKind, do_create_token

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "@insiders-only.example"


@pytest.fixture
def shop(web_server: str, new_key: Callable[[str], str], django_user_model: Any,
         ) -> tuple[str, Any, str]:
    """A project with a ruled flag ``beta`` (its staging state) and a browser key for staging."""
    key = new_key("shop")
    actor = Actor.system("tests")
    project = do_create_project(key=key, name="Shop", environments=[
        {"key": "staging", "name": "Staging"}], actor=actor)
    states = do_create_flag(project, {
        "key": "beta", "name": "Beta", "kind": "boolean", "variations": [True, False],
        "on": True, "off_variation": 1, "fallthrough": {"variation": 1},
        "rules": [{"id": "insiders", "variation": 0, "clauses": [
            {"attribute": "email", "operator": "ends_with", "values": [SECRET]}]}],
    }, actor=actor)
    owner = django_user_model.objects.create_superuser("key-owner", password="key-owner-pw")
    _, secret = do_create_token(created_by=owner, name="web", kind=TokenKind.BROWSER,
                                scope=f"{key}/staging")
    return key, states[0], secret


def test_browser_key_client_gets_values_and_follows_changes(
        web_server: str, shop: tuple[str, Any, str], browser: Any) -> None:
    _, state, secret = shop
    page = browser.new_page()
    page.set_default_timeout(15_000)
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(
        payload if isinstance(payload, str) else payload.decode())))
    page.set_content("<html><body><p id=out></p></body></html>")  # another origin
    page.add_script_tag(url=f"{web_server}/static/flagstaff/flagstaff-client.js")
    ready = page.evaluate("""async ([url, key, email]) => {
        window.changes = [];
        window.flags = Flagstaff.createClient({url, key, context: {key: "u1", email}});
        flags.on("change", (flag, value) => changes.push([flag, value]));
        return await flags.waitUntilReady(15000);
    }""", [web_server, secret, f"ann{SECRET}"])
    assert ready is True
    assert page.evaluate("flags.variation('beta', null)") is True
    detail = page.evaluate("flags.variationDetail('beta', null)")
    assert detail["reason"] == {"kind": "RULE_MATCH"} and detail["stale"] is False
    assert page.evaluate("flags.variation('missing', 'fallback')") == "fallback"

    off_loop(lambda: do_toggle_flag(state, False, actor=Actor.system("tests")))
    page.wait_for_function("flags.variation('beta', null) === false")
    assert page.evaluate("changes") == [["beta", False]]

    page.evaluate("flags.identify({key: 'u2'})")  # another visitor: fallthrough, still off
    page.wait_for_function("flags.revision !== null && flags.variationDetail('beta').reason.kind === 'OFF'")
    received = "".join(frames)
    assert '"values"' in received
    for leak in (SECRET, "insiders", "clauses", "ends_with", "rules"):
        assert leak not in received, leak
    page.evaluate("flags.close()")
    assert page.evaluate("flags.status") == "closed"
    page.close()
