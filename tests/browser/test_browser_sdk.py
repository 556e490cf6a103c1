"""The browser client (flagstaff-client.js) in headless Chromium with a real browser key.

The page is not the platform's (``about:blank`` plus the script from the web
process): a product team embedding the client on its own site. It receives
evaluated values, follows a change saved elsewhere, and never sees rules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
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


FAKE_WEBSOCKET = """
window.sockets = [];
class FakeWebSocket {
  constructor(url) {
    this.url = url; this.readyState = 0; this.sent = []; sockets.push(this);
    setTimeout(() => { if (this.readyState === 0) { this.readyState = 1; if (this.onopen) this.onopen(); } }, 0);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close() { this.readyState = 3; }
  deliver(msg) { if (this.onmessage) this.onmessage({data: typeof msg === "string" ? msg : JSON.stringify(msg)}); }
  drop(code) { this.readyState = 3; if (this.onclose) this.onclose({code: code || 1006}); }
}
window.WebSocket = FakeWebSocket;
"""

CLIENT_JS = Path(__file__).resolve().parents[2] / "frontend" / "static" / "flagstaff" / "flagstaff-client.js"


def test_live_stream_resumes_dedupes_and_detects_silence(browser: Any) -> None:
    """``Flagstaff.LiveStream`` against a scripted WebSocket: the protocol's client half."""
    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.set_content("<html><body></body></html>")
    page.add_script_tag(content=FAKE_WEBSOCKET)
    page.add_script_tag(path=str(CLIENT_JS))
    page.evaluate("""() => {
        window.got = []; window.states = [];
        window.stream = new Flagstaff.LiveStream({url: "http://flags.test",
            subscriptions: [{project: "p", environment: "e", since_revision: null}],
            heartbeatTimeout: 400, reconnectInitial: 20, reconnectMax: 40});
        stream.on("event", (m) => got.push(m.revision));
        stream.on("snapshot", (m) => got.push("snapshot@" + m.revision));
        stream.on("status", (s) => states.push(s));
    }""")
    page.wait_for_function("sockets.length === 1 && sockets[0].sent.length === 1")
    assert page.evaluate("sockets[0].url") == "ws://flags.test/ws/v1/flags/"
    assert page.evaluate("sockets[0].sent[0]") == {
        "type": "subscribe", "project": "p", "environment": "e", "since_revision": None}
    page.evaluate("""() => {
        const base = {project: "p", environment: "e"};
        const s = sockets[0];
        s.deliver({type: "snapshot", ...base, revision: 5, flags: {}, segments: {}});
        s.deliver({type: "subscribed", ...base, mode: "snapshot", revision: 5});
        s.deliver({type: "event", ...base, revision: 6, changes: []});
        s.deliver({type: "event", ...base, revision: 6, changes: []});   // twice: dropped
        s.deliver("not json");                                            // ignored
        s.deliver({type: "event", project: "other", environment: "e", revision: 9, changes: []});
        s.deliver({type: "heartbeat", ...base, revision: 7});
        s.drop(1006);
    }""")
    assert page.evaluate("got") == ["snapshot@5", 6]
    page.wait_for_function("sockets.length === 2 && sockets[1].sent.length === 1")
    assert page.evaluate("sockets[1].sent[0].since_revision") == 7  # resume, not a snapshot
    assert page.evaluate("states") == ["ready", "stale"]
    # the second connection opens and then says nothing: the heartbeat timeout replaces it
    page.wait_for_function("sockets.length === 3", timeout=10_000)
    page.evaluate("""() => {
        const base = {project: "p", environment: "e"};
        sockets[2].deliver({type: "event", ...base, revision: 8, changes: []});
        sockets[2].deliver({type: "subscribed", ...base, mode: "resume", revision: 8});
    }""")
    assert page.evaluate("got") == ["snapshot@5", 6, 8]
    assert page.evaluate("stream.status") == "ready"
    page.evaluate("stream.close()")
    assert page.evaluate("stream.status") == "closed"
    page.close()


def test_values_client_states_and_refusal(browser: Any) -> None:
    """``Flagstaff.createClient`` against a scripted WebSocket: values, changes, a refused key."""
    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.set_content("<html><body></body></html>")
    page.add_script_tag(content=FAKE_WEBSOCKET)
    page.add_script_tag(path=str(CLIENT_JS))
    page.evaluate("""() => {
        window.changes = [];
        window.flags = Flagstaff.createClient({url: "https://flags.test", key: "fs_browser_x",
            context: {key: "u1"}, reconnectInitial: 20, reconnectMax: 40});
        flags.on("change", (flag, value) => changes.push([flag, value]));
    }""")
    page.wait_for_function("sockets.length === 1 && sockets[0].sent.length === 1")
    assert page.evaluate("sockets[0].url") == "wss://flags.test/ws/v1/values/?key=fs_browser_x"
    assert page.evaluate("sockets[0].sent[0]") == {"type": "identify", "context": {"key": "u1"}}
    assert page.evaluate("flags.variationDetail('a', 'd').reason.error_kind") == "CLIENT_NOT_READY"
    page.evaluate("""() => {
        const base = {project: "p", environment: "e"};
        sockets[0].deliver({type: "values", ...base, revision: 3, values: {
            a: {value: true, variation: 0, reason: {kind: "FALLTHROUGH"}},
            b: {value: null, variation: null, reason: {kind: "OFF"}}}});
        sockets[0].deliver({type: "changed", ...base, revision: 4,
            values: {a: {value: false, variation: 1, reason: {kind: "RULE_MATCH"}}}, removed: []});
        sockets[0].deliver({type: "changed", ...base, revision: 4,
            values: {a: {value: true, variation: 0, reason: {kind: "RULE_MATCH"}}}, removed: []});
    }""")
    assert page.evaluate("flags.status") == "ready"
    assert page.evaluate("[flags.variation('a', 'd'), flags.variation('b', 'd')]") == [False, "d"]
    assert page.evaluate("changes") == [["a", False]]  # the repeated revision was dropped
    assert page.evaluate("flags.allFlags()") == {"a": False, "b": None}
    page.evaluate("sockets[0].drop(1006)")
    assert page.evaluate("flags.status") == "stale"
    assert page.evaluate("flags.variationDetail('a', 'd')")["stale"] is True
    page.wait_for_function("sockets.length === 2 && sockets[1].sent.length === 1")
    page.evaluate("sockets[1].drop(4401)")
    assert page.evaluate("flags.status") == "error"
    page.evaluate("flags.close()")
    page.close()
