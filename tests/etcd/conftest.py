"""Fixtures for the etcd-compatibility tests: one Flagstaff cluster per test module.

``flagstaff_cluster`` is a started 3-member cluster with a leader, shared by
the tests of a module (they use distinct key prefixes). Tests that kill or
reconfigure members use ``make_cluster`` (function-scoped) instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, ProcessRegistry


@pytest.fixture(scope="module")
def module_processes() -> Iterator[ProcessRegistry]:
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        registry.kill_all()


@pytest.fixture(scope="module")
def flagstaff_cluster(
    tmp_path_factory: pytest.TempPathFactory, module_processes: ProcessRegistry
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("flagstaff")
    cluster = Cluster(base, module_processes, 3, [])
    cluster.start()
    cluster.wait_for_leader(timeout=30)
    yield cluster
    module_processes.kill_all()
    for node in cluster.nodes:
        shutil.rmtree(node.data_dir, ignore_errors=True)


@pytest.fixture
def processes() -> Iterator[ProcessRegistry]:
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        registry.kill_all()


@pytest.fixture
def make_cluster(tmp_path: Path, processes: ProcessRegistry) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(size=3, extra_args=[...])`` -> a started :class:`Cluster`."""
    clusters: list[Cluster] = []

    def make(size: int = 3, extra_args: list[str] | None = None, start: bool = True) -> Cluster:
        cluster = Cluster(tmp_path / f"c{len(clusters)}", processes, size, extra_args or [])
        for node in cluster.nodes:
            node.data_dir.parent.mkdir(parents=True, exist_ok=True)
        clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    yield make
    processes.kill_all()
    for cluster in clusters:
        print(cluster.dump_logs())
        for node in cluster.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def real_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A single-member real etcd (Debian's etcd-server); its endpoint for etcdctl."""
    from tests.etcd_process import start_etcd

    cluster = start_etcd(tmp_path_factory.mktemp("etcd"), size=1)
    try:
        yield cluster.endpoints[0]
    finally:
        cluster.kill_all()
