"""Fixtures of the SDK tests: a scripted fake platform on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sdk.fake_platform import FakePlatform


@pytest.fixture
def platform_fake() -> Iterator[FakePlatform]:
    fake = FakePlatform()
    try:
        yield fake
    finally:
        fake.stop()
