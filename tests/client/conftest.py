"""Fixtures for the client tests: real etcd processes (from ``tests/etcd_process.py``) and clients.

``etcd`` is one single-member etcd shared by the whole session (tests keep
to their own key prefix, from ``prefix``); ``etcd3`` is a 3-member cluster
shared by a module, whose tests restart any member they kill;
``fresh_etcd`` is a private single member for tests that change cluster-wide
settings (auth). Every process is SIGKILLed at teardown.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from consensus.client import Client
from tests.etcd_process import EtcdCluster, start_etcd


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = start_etcd(tmp_path_factory.mktemp("etcd1"), 1)
    try:
        yield cluster
    finally:
        cluster.kill_all()


@pytest.fixture(scope="module")
def etcd3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = start_etcd(tmp_path_factory.mktemp("etcd3"), 3)
    try:
        yield cluster
    finally:
        cluster.kill_all()


@pytest.fixture
def fresh_etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = start_etcd(tmp_path / "etcd", 1)
    try:
        yield cluster
    finally:
        cluster.kill_all()


@pytest.fixture
async def client(etcd: EtcdCluster) -> AsyncIterator[Client]:
    async with Client(etcd.endpoints, timeout=5.0) as c:
        yield c


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix private to the test."""
    return "/test/" + re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name) + "/"


@pytest.fixture
def etcd_endpoints(etcd: EtcdCluster) -> list[str]:
    return etcd.endpoints
