"""The Python SDK against a scripted platform: start, evaluation, streaming, resilience.

The fake (``fake_platform.py``) speaks the websocket protocol from an
in-memory history and misbehaves on demand; the real platform is exercised by
``tests/platform/test_sdk_live.py``. Every wait polls a condition against a
deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from flags.sdk import AsyncClient, Client, ClientState, FlagChange
from tests.sdk.fake_platform import FakePlatform, wait_for

ENV = "shop/production"
KEY = "fs_sdk_test"


def boolean_flag(key: str, on: bool = True, rules: list[dict[str, Any]] | None = None,
                 ) -> dict[str, Any]:
    return {"key": key, "kind": "boolean", "variations": [True, False], "on": on,
            "off_variation": 1, "fallthrough": {"variation": 0}, "rules": rules or []}


def string_flag(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "kind": "string", "variations": [value, "other"], "on": True,
            "off_variation": 1, "fallthrough": {"variation": 0}}


def client_for(fake: FakePlatform, **options: Any) -> Client:
    options.setdefault("heartbeat_timeout", 2.0)
    options.setdefault("reconnect_initial", 0.05)
    options.setdefault("reconnect_max", 0.2)
    options.setdefault("events_interval", None)
    return Client(fake.url, KEY, ENV, **options)


def test_start_snapshot_ready_and_evaluate(platform_fake: FakePlatform) -> None:
    platform_fake.flags = {"checkout": boolean_flag("checkout"),
                           "banner": string_flag("banner", "hello")}
    with client_for(platform_fake) as client:
        assert client.wait_until_ready(10)
        assert client.status.state is ClientState.READY
        assert client.variation("checkout", {"key": "u1"}, False) is True
        detail = client.variation_detail("checkout", {"key": "u1"}, False)
        assert (detail.value, detail.variation, detail.reason.kind.value) == (True, 0, "FALLTHROUGH")
        assert not detail.stale
        assert client.bool_variation("checkout", {"key": "u1"}, False) is True
        assert client.string_variation("banner", {"key": "u1"}, "x") == "hello"
        # the wrong type, a missing flag, a bad context: the default with an ERROR reason
        wrong = client.variation_detail("banner", {"key": "u1"}, "x")
        assert wrong.value == "hello"
        assert client.bool_variation("banner", {"key": "u1"}, False) is False
        missing = client.variation_detail("nope", {"key": "u1"}, 7)
        assert (missing.value, missing.reason.kind.value,
                missing.reason.error_kind.value) == (7, "ERROR", "FLAG_NOT_FOUND")  # type: ignore[union-attr]
        bad = client.variation_detail("checkout", "not a context", False)
        assert bad.reason.error_kind.value == "USER_NOT_SPECIFIED"  # type: ignore[union-attr]
        assert client.all_flags({"key": "u1"}) == {"checkout": True, "banner": "hello"}
    assert platform_fake.subscribes[0] == {"type": "subscribe", "project": "shop",
                                           "environment": "production", "since_revision": None}
    assert platform_fake.headers[0]["Authorization"] == f"Bearer {KEY}"


def test_not_ready_returns_default_with_reason(platform_fake: FakePlatform) -> None:
    platform_fake.mode = "stall"
    with client_for(platform_fake) as client:
        assert not client.wait_until_ready(0.2)
        detail = client.variation_detail("checkout", {"key": "u1"}, "fallback")
        assert detail.value == "fallback"
        assert detail.reason.error_kind.value == "CLIENT_NOT_READY"  # type: ignore[union-attr]
        assert client.status.state is ClientState.INITIALIZING


def test_changes_reach_listeners_once_per_revision(platform_fake: FakePlatform) -> None:
    platform_fake.flags = {"a": boolean_flag("a"), "b": boolean_flag("b")}
    with client_for(platform_fake) as client:
        assert client.wait_until_ready(10)
        every: list[FlagChange] = []
        only_a: list[FlagChange] = []
        client.on_change(every.append)
        remove = client.on_change(only_a.append, "a")
        revision = platform_fake.put_flag("a", boolean_flag("a", on=False))
        wait_for(lambda: len(every) == 1, what="the change of a")
        assert every == [FlagChange("a", revision, False)] and only_a == every
        assert client.variation("a", {"key": "u"}, True) is False
        # an event the client already holds (a server replaying too much) is not applied twice
        platform_fake.send_raw(json.dumps({
            "type": "event", "project": "shop", "environment": "production",
            "revision": revision, "changes": [{"op": "put", "key": "/flags/shop/production/a",
                                               "kind": "flag", "flag": "a",
                                               "doc": boolean_flag("a")}]}))
        remove()
        deleted = platform_fake.delete_flag("b")
        wait_for(lambda: len(every) == 2, what="the deletion of b")
        assert every[1] == FlagChange("b", deleted, True)
        assert only_a == [FlagChange("a", revision, False)]
        assert client.variation("a", {"key": "u"}, True) is False
        assert client.variation_detail("b", {"key": "u"}, 3).value == 3


def test_segment_change_notifies_the_flags_using_it(platform_fake: FakePlatform) -> None:
    rule = [{"id": "beta", "clauses": [{"attribute": "key", "operator": "segment_match",
                                        "values": ["beta"]}], "variation": 0}]
    flag = {**boolean_flag("gated", rules=rule), "fallthrough": {"variation": 1}}
    platform_fake.flags = {"gated": flag, "plain": boolean_flag("plain")}
    platform_fake.segments = {"beta": {"key": "beta", "included": ["alice"]}}
    with client_for(platform_fake) as client:
        assert client.wait_until_ready(10)
        assert client.variation("gated", {"key": "bob"}, None) is False
        changes: list[FlagChange] = []
        client.on_change(changes.append)
        platform_fake.put_segment("beta", {"key": "beta", "included": ["alice", "bob"]})
        wait_for(lambda: changes, what="the segment change")
        assert [c.key for c in changes] == ["gated"]
        assert client.variation("gated", {"key": "bob"}, None) is True


def test_malformed_messages_are_logged_and_ignored(platform_fake: FakePlatform,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    platform_fake.flags = {"a": boolean_flag("a")}
    caplog.set_level(logging.WARNING, logger="flags.sdk")
    with client_for(platform_fake) as client:
        assert client.wait_until_ready(10)
        garbage = [
            "not json at all", "[1, 2]", '{"no": "type"}', json.dumps({"type": "event"}),
            json.dumps({"type": "event", "project": "shop", "environment": "production",
                        "revision": "12", "changes": []}),
            json.dumps({"type": "event", "project": "shop", "environment": "production",
                        "revision": 99, "changes": [{"op": "explode", "kind": "flag"}]}),
            json.dumps({"type": "snapshot", "project": "shop", "environment": "production",
                        "revision": 98, "flags": ["a"], "segments": {}}),
            json.dumps({"type": "heartbeat", "project": "shop", "environment": "production",
                        "revision": -1}),
        ]
        for frame in garbage:
            platform_fake.send_raw(frame)
        # a well-formed event after the garbage still lands: the client is alive and current
        revision = platform_fake.put_flag("a", boolean_flag("a", on=False))
        wait_for(lambda: client.variation("a", {"key": "u"}, None) is False, what="the event")
        assert client.status.state is ClientState.READY
        assert client.status.revision is None or client.core.store.revision == revision
        ignored = [r for r in caplog.records if "malformed server message" in r.getMessage()]
        assert len(ignored) == len(garbage)
        assert len(platform_fake.subscribes) == 1  # no reconnection was needed


def test_stalled_server_is_detected_by_heartbeat_timeout(platform_fake: FakePlatform) -> None:
    platform_fake.flags = {"a": boolean_flag("a")}
    platform_fake.mode = "silent-after-subscribe"
    states: list[ClientState] = []
    with client_for(platform_fake, heartbeat_timeout=0.5) as client:
        client.on_status(lambda s: states.append(s.state))
        assert client.wait_until_ready(10)
        first = client.core.store.revision
        wait_for(lambda: ClientState.STALE in states, what="the STALE state")
        assert "heartbeat timeout" in client.status.message or states[-1] is ClientState.READY
        # serving the last known values, marked stale
        platform_fake.mode = "normal"
        wait_for(lambda: client.status.state is ClientState.READY and len(
            platform_fake.subscribes) >= 2, what="the reconnection")
        assert platform_fake.subscribes[1]["since_revision"] == first
        assert client.variation("a", {"key": "u"}, None) is True


def test_stale_while_unreachable_then_resume_without_missing_or_repeating(
        platform_fake: FakePlatform) -> None:
    platform_fake.flags = {"a": boolean_flag("a"), "b": boolean_flag("b")}
    with client_for(platform_fake) as client:
        assert client.wait_until_ready(10)
        changes: list[FlagChange] = []
        client.on_change(changes.append)
        platform_fake.put_flag("a", boolean_flag("a", on=False))
        wait_for(lambda: len(changes) == 1, what="the first change")
        held = client.core.store.revision
        platform_fake.mode = "stall"  # reconnections hang until we say so
        platform_fake.drop_connections()
        wait_for(lambda: client.status.state is ClientState.STALE, what="STALE")
        detail = client.variation_detail("a", {"key": "u"}, None)
        assert (detail.value, detail.stale) == (False, True)  # the last known value, marked stale
        assert "serving the last known values" in client.status.message
        platform_fake.set_quietly({"b": boolean_flag("b", on=False), "c": boolean_flag("c")})
        platform_fake.mode = "normal"
        platform_fake.drop_connections()  # the stalled session; the next one resumes
        wait_for(lambda: client.status.state is ClientState.READY, what="READY again")
        resumed = [s["since_revision"] for s in platform_fake.subscribes[1:]]
        assert resumed and all(r == held for r in resumed)
        wait_for(lambda: len(changes) == 3, what="the missed changes")
        assert [c.key for c in changes] == ["a", "b", "c"]
        assert client.variation("b", {"key": "u"}, None) is False
        assert client.variation("c", {"key": "u"}, None) is True


def test_compacted_history_forces_a_full_resync(platform_fake: FakePlatform) -> None:
    platform_fake.flags = {"a": boolean_flag("a"), "b": boolean_flag("b")}
    with client_for(platform_fake) as client:
        assert client.wait_until_ready(10)
        changes: list[FlagChange] = []
        client.on_change(changes.append)
        platform_fake.mode = "stall"
        platform_fake.drop_connections()
        wait_for(lambda: client.status.state is ClientState.STALE, what="STALE")
        platform_fake.set_quietly({"a": boolean_flag("a", on=False)})
        platform_fake.compact()
        platform_fake.mode = "normal"
        platform_fake.drop_connections()
        wait_for(lambda: client.status.state is ClientState.READY, what="READY again")
        wait_for(lambda: changes, what="the resync's change")
        assert [c.key for c in changes] == ["a"]  # only what differs from the cache
        assert client.variation("a", {"key": "u"}, None) is False
        assert client.core.store.revision == platform_fake.revision


def test_refused_key_is_an_error_state_and_values_still_default(
        platform_fake: FakePlatform) -> None:
    platform_fake.mode = "refuse"
    with client_for(platform_fake) as client:
        wait_for(lambda: client.status.state is ClientState.ERROR, what="the ERROR state")
        assert "4401" in client.status.message
        assert client.variation("a", {"key": "u"}, "d") == "d"
        assert not client.wait_until_ready(0)


def test_bootstrap_from_file_then_stream_replaces_it(platform_fake: FakePlatform,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"flags": {"a": boolean_flag("a", on=False)}, "segments": {}}))
    platform_fake.mode = "stall"
    platform_fake.flags = {"a": boolean_flag("a")}
    with client_for(platform_fake, bootstrap=path) as client:
        changes: list[FlagChange] = []
        client.on_change(changes.append)
        assert client.variation_detail("a", {"key": "u"}, None).value is False  # before ready
        platform_fake.mode = "normal"
        platform_fake.drop_connections()
        assert client.wait_until_ready(10)
        wait_for(lambda: changes, what="the change from bootstrap to the platform's value")
        assert client.variation("a", {"key": "u"}, None) is True
        exported = client.export()
    assert exported["flags"] == {"a": boolean_flag("a")}
    # offline mode: bootstrap data only, never a connection
    before = len(platform_fake.headers)
    offline = Client(platform_fake.url, KEY, ENV, offline=True, bootstrap=exported)
    assert offline.wait_until_ready(0)
    assert offline.status.state is ClientState.OFFLINE
    assert offline.variation("a", {"key": "u"}, None) is True
    offline.close()
    assert len(platform_fake.headers) == before


def test_bad_bootstrap_data_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        Client("http://127.0.0.1:9", KEY, ENV, offline=True, bootstrap={"flags": []})
    with pytest.raises(ValueError):
        Client("http://127.0.0.1:9", KEY, "no-environment", offline=True)


async def test_async_client_streams_on_the_callers_loop(platform_fake: FakePlatform) -> None:
    platform_fake.flags = {"a": boolean_flag("a")}
    seen: list[FlagChange] = []
    done = asyncio.Event()

    async def listener(change: FlagChange) -> None:
        seen.append(change)
        done.set()

    async with AsyncClient(platform_fake.url, KEY, ENV, heartbeat_timeout=2.0,
                           reconnect_initial=0.05, events_interval=None) as client:
        assert await client.wait_until_ready(10)
        assert client.bool_variation("a", {"key": "u"}, False) is True
        client.on_change(listener, "a")
        await asyncio.to_thread(platform_fake.put_flag, "a", boolean_flag("a", on=False))
        async with asyncio.timeout(10):
            await done.wait()
        assert client.variation("a", {"key": "u"}, None) is False
        assert seen[0].key == "a"
    assert client.status.state is ClientState.CLOSED


def test_close_from_a_change_listener_does_not_deadlock(platform_fake: FakePlatform) -> None:
    platform_fake.flags = {"a": boolean_flag("a")}
    client = client_for(platform_fake)
    assert client.wait_until_ready(10)
    client.on_change(lambda change: client.close())
    platform_fake.put_flag("a", boolean_flag("a", on=False))
    wait_for(lambda: client.status.state is ClientState.CLOSED, what="CLOSED")
    assert client.variation("a", {"key": "u"}, None) is False  # still evaluates the cache
    wait_for(lambda: platform_fake.connections == 0, what="the connection to close")
