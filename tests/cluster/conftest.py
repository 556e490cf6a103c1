"""Fixtures for multi-process cluster tests: every process started is killed at teardown."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import Cluster, ProcessRegistry


@pytest.fixture
def processes() -> Iterator[ProcessRegistry]:
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        registry.kill_all()


@pytest.fixture
def make_cluster(
    tmp_path: Path, processes: ProcessRegistry, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
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
        print(cluster.dump_logs())  # shown by pytest only when the test failed
        # Logs stay for a post-mortem; data dirs go (each WAL preallocates 64 MiB).
        for node in cluster.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)
