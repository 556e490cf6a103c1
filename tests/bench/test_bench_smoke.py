"""Smoke test of ``flagstaff bench``: put and range against a real one-member Flagstaff cluster.

Checks the JSON report's shape and that every request succeeded; no timing
is asserted (benchmarks measure, they never fail on a number).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import ROOT, Cluster, ProcessRegistry

LATENCY_KEYS = {"count", "avg", "min", "max", "stddev", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p999"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    registry = ProcessRegistry()
    c = Cluster(tmp_path, registry, 1, [])
    try:
        c.start()
        c.wait_for_leader(timeout=15.0)
        yield c
    finally:
        registry.kill_all()
        print(c.dump_logs())


def bench(cluster: Cluster, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "consensus.cli", "bench", *args, "--endpoints", cluster.endpoints, "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def check_shape(report: dict[str, Any], workload: str, requests: int) -> None:
    assert report["workload"] == workload
    assert report["requests"] == requests
    assert report["ok"] == requests
    assert report["errors"] == 0, report["error_kinds"]
    assert report["error_kinds"] == {}
    assert report["throughput"] > 0
    assert report["duration_s"] > 0
    assert set(report["latency_ms"]) == LATENCY_KEYS
    assert report["latency_ms"]["count"] == requests
    assert report["latency_ms"]["min"] <= report["latency_ms"]["p50"] <= report["latency_ms"]["max"]
    generator = report["generator"]
    assert set(generator) >= {"cpu_s", "cores", "cpu_us_per_op", "procs", "transport"}
    assert generator["transport"] == "h2"
    assert report["config"]["endpoints"] == report["config"]["endpoints"].strip()


def test_put_and_range(cluster: Cluster) -> None:
    put = bench(cluster, "put", "--total", "200", "--clients", "10", "--key-space-size", "50")
    check_shape(put, "put", 200)
    assert put["config"]["clients"] == 10

    rng = bench(cluster, "range", "--total", "200", "--clients", "10", "--key-space-size", "50")
    check_shape(rng, "range", 200)
    assert rng["config"]["consistency"] == "l"
    assert rng["extra"]["prefill"]["keys"] == 50
