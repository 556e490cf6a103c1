"""Fixtures of the Raft core tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    """Whether data-driven files should be rewritten (``pytest --rewrite`` or ``REWRITE=1``)."""
    flag = bool(request.config.getoption("--rewrite", default=False))
    return flag or os.environ.get("REWRITE", "") not in ("", "0")
