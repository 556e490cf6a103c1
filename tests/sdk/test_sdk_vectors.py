"""The shared evaluation vectors through the SDK: documents streamed in a snapshot, then
``variation_detail`` — the same results as the engine's own run (tests/flags_engine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flags.sdk import Client
from tests.flags_engine.test_vectors import json_equal
from tests.sdk.fake_platform import FakePlatform

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "evaluation"
FILES = sorted(VECTORS.glob("*.json"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_vectors_through_the_sdk(path: Path, platform_fake: FakePlatform) -> None:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    platform_fake.flags = data.get("flags", {})
    platform_fake.segments = data.get("segments", {})
    with Client(platform_fake.url, "fs_sdk_vectors", "shop/production",
                events_interval=None) as client:
        assert client.wait_until_ready(10)
        for case in data["cases"]:
            detail = client.variation_detail(case["flag"], case["context"], case.get("default"),
                                             kind=case.get("expected_kind"))
            got = {"value": detail.value, "variation": detail.variation,
                   "reason": detail.reason.to_json()}
            assert json_equal(got, case["expect"]), (case["description"], got, case["expect"])
