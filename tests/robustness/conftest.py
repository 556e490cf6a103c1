"""Fixtures for robustness runs: every process, mount and proxy rule is cleaned up, pass or fail."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import ProcessRegistry
from tests.robustness.cluster import Mounts
from tests.robustness.scenario import RunResult, Scenario, run_scenario


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[[Scenario], RunResult]]:
    """``run(scenario)`` -> its :class:`RunResult` (members, proxy and tmpfs mounts torn down after)."""
    registry = ProcessRegistry()
    mounts = Mounts()
    workdirs: list[Path] = []

    def go(scenario: Scenario) -> RunResult:
        workdir = tmp_path / f"run{len(workdirs)}"
        workdirs.append(workdir)
        result = asyncio.run(run_scenario(scenario, workdir, registry, mounts))
        print(result.summary())
        return result

    try:
        yield go
    finally:
        registry.kill_all()
        mounts.unmount_all()
        for workdir in workdirs:
            # Logs stay for a post-mortem; data dirs go (each WAL preallocates 64 MiB).
            for data in workdir.glob("members/*/"):
                shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(workdir / "etcd", ignore_errors=True)
