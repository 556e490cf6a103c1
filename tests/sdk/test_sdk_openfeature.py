"""The OpenFeature provider through the ``openfeature`` API: details, reasons, error codes, events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from flags.sdk.openfeature import FlagstaffProvider
from tests.sdk.fake_platform import FakePlatform, wait_for
from tests.sdk.test_sdk_client import boolean_flag, string_flag


@pytest.fixture
def events() -> Iterator[list[tuple[ProviderEvent, EventDetails]]]:
    seen: list[tuple[ProviderEvent, EventDetails]] = []
    handlers = {kind: (lambda d, k=kind: seen.append((k, d))) for kind in ProviderEvent}
    for kind, handler in handlers.items():
        api.add_handler(kind, handler)
    yield seen
    for kind, handler in handlers.items():
        api.remove_handler(kind, handler)
    api.clear_providers()


def kinds(seen: list[tuple[ProviderEvent, Any]]) -> list[ProviderEvent]:
    return [k for k, _ in seen]


def test_resolution_details_and_events(platform_fake: FakePlatform,
                                       events: list[tuple[ProviderEvent, EventDetails]]) -> None:
    rule = [{"id": "nz", "clauses": [{"attribute": "country", "operator": "in",
                                      "values": ["NZ"]}], "variation": 0}]
    platform_fake.flags = {
        "checkout": {**boolean_flag("checkout", rules=rule), "fallthrough": {"variation": 1}},
        "banner": string_flag("banner", "hello"),
        "limit": {"key": "limit", "kind": "number", "variations": [10, 2.5], "on": True,
                  "off_variation": 0, "fallthrough": {"variation": 0}},
        "layout": {"key": "layout", "kind": "json", "variations": [{"cols": 2}], "on": True,
                   "off_variation": 0, "fallthrough": {"variation": 0}},
        "dark": boolean_flag("dark", on=False),
    }
    provider = FlagstaffProvider(url=platform_fake.url, sdk_key="fs_sdk_of",
                                 environment="shop/production", heartbeat_timeout=2.0,
                                 reconnect_initial=0.05, reconnect_max=0.2, events_interval=None)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    nz = EvaluationContext(targeting_key="u1", attributes={"country": "NZ"})
    fr = EvaluationContext(targeting_key="u1", attributes={"country": "FR"})

    hit = client.get_boolean_details("checkout", False, nz)
    assert (hit.value, hit.reason, hit.variant) == (True, Reason.TARGETING_MATCH, "0")
    assert hit.flag_metadata["rule_id"] == "nz"
    fallthrough = client.get_boolean_details("checkout", True, fr)
    assert (fallthrough.value, fallthrough.reason, fallthrough.variant) == (False, Reason.DEFAULT,
                                                                            "1")
    off = client.get_boolean_details("dark", True, fr)
    assert (off.value, off.reason) == (False, Reason.DISABLED)
    assert client.get_string_value("banner", "x", fr) == "hello"
    assert client.get_integer_value("limit", 0, fr) == 10
    assert client.get_float_value("limit", 0.0, fr) == 10.0
    assert client.get_object_value("layout", {}, fr) == {"cols": 2}

    missing = client.get_boolean_details("nope", True, fr)
    assert (missing.value, missing.reason, missing.error_code) == (True, Reason.ERROR,
                                                                   ErrorCode.FLAG_NOT_FOUND)
    mismatch = client.get_boolean_details("banner", False, fr)
    assert (mismatch.value, mismatch.error_code) == (False, ErrorCode.TYPE_MISMATCH)
    not_int = client.get_integer_details("banner", 3, fr)
    assert (not_int.value, not_int.error_code) == (3, ErrorCode.TYPE_MISMATCH)
    no_key = client.get_boolean_details("checkout", False, EvaluationContext())
    assert no_key.error_code == ErrorCode.TARGETING_KEY_MISSING

    # configuration changed, with the flags that changed
    platform_fake.put_flag("dark", boolean_flag("dark", on=True))
    wait_for(lambda: ProviderEvent.PROVIDER_CONFIGURATION_CHANGED in kinds(events),
             what="PROVIDER_CONFIGURATION_CHANGED")
    changed = [d for k, d in events if k is ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]
    assert changed[0].flags_changed == ["dark"]
    assert client.get_boolean_value("dark", False, fr) is True

    # the platform goes away: STALE, values served (reason STALE); back: READY again
    platform_fake.mode = "stall"
    platform_fake.drop_connections()
    wait_for(lambda: ProviderEvent.PROVIDER_STALE in kinds(events), what="PROVIDER_STALE")
    stale = client.get_boolean_details("dark", False, fr)
    assert (stale.value, stale.reason) == (True, Reason.STALE)
    ready_before = kinds(events).count(ProviderEvent.PROVIDER_READY)
    platform_fake.mode = "normal"
    platform_fake.drop_connections()
    wait_for(lambda: kinds(events).count(ProviderEvent.PROVIDER_READY) > ready_before,
             what="PROVIDER_READY after recovery")

    # the key is refused: PROVIDER_ERROR
    platform_fake.mode = "refuse"
    platform_fake.drop_connections()
    wait_for(lambda: ProviderEvent.PROVIDER_ERROR in kinds(events), what="PROVIDER_ERROR")


def test_initialize_fails_when_not_ready(platform_fake: FakePlatform,
                                         events: list[tuple[ProviderEvent, EventDetails]]) -> None:
    platform_fake.mode = "stall"
    provider = FlagstaffProvider(url=platform_fake.url, sdk_key="fs_sdk_of",
                                 environment="shop/production", ready_timeout=0.2,
                                 events_interval=None)
    api.set_provider(provider)
    wait_for(lambda: ProviderEvent.PROVIDER_ERROR in kinds(events), what="PROVIDER_ERROR")
    details = api.get_client().get_boolean_details("a", True,
                                                   EvaluationContext(targeting_key="u"))
    assert details.value is True
    assert details.error_code in (ErrorCode.PROVIDER_NOT_READY, ErrorCode.PROVIDER_FATAL)
