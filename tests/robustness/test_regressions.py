"""Minimal regression tests for server bugs the robustness suite found (one test per bug).

Each test names the run or fuzz case that found it. They are small and fast
(in-process where possible), so they run with the unit tests.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from consensus.client import Client
from consensus.mvcc import KVStore, PutRequest, RangeRequest
from tests.cluster.harness import ProcessRegistry, http, wait_until
from tests.robustness.cluster import FlagstaffCluster, Member, start_proxy
from tests.robustness.faults import corrupt_tail, newest_segment


@pytest.mark.parametrize("limit", [2**62, 2**63 - 2, 2**63 - 1])
def test_range_with_the_largest_int64_limit_returns_everything(limit: int) -> None:
    # Found by test_grpc_fuzz (absurd limits): `islice(scan, limit + 1)` raised ValueError for
    # limit = 2**63 - 1 (past sys.maxsize), and the member answered UNKNOWN instead of the keys.
    store = KVStore()
    for i in range(3):
        store.put(PutRequest(b"k%d" % i, b"v"))
    result = store.range(RangeRequest(b"k", b"l", limit=limit))
    assert [kv.key for kv in result.kvs] == [b"k0", b"k1", b"k2"]
    assert result.count == 3 and not result.more


@pytest.mark.slow
def test_a_member_that_lost_acknowledged_entries_fails_loudly_or_recovers(tmp_path: Path) -> None:
    registry = ProcessRegistry()
    try:
        proxy = start_proxy(registry, tmp_path / "proxy.log")
        cluster = FlagstaffCluster(tmp_path / "members", registry, 3, proxy)
        cluster.start()
        cluster.wait_serving(60)

        async def write() -> None:
            async with Client(cluster.endpoints(), timeout=10) as client:
                for i in range(30):
                    await client.put(f"/reg/{i}", "v")

        asyncio.run(write())
        wait_until(lambda: len({_applied(m) for m in cluster.members}) == 1, 30, "members to converge")
        follower = cluster.followers()[0]
        follower.kill9()
        corrupt_tail(newest_segment(follower.data_dir), "truncate-acked", nbytes=3)
        cluster.restart(follower)
        # It must not limp on rejecting every heartbeat: it stops with an error
        # (the Raft core refuses the leader's commit index beyond its log).
        wait_until(lambda: not follower.running, 25, f"{follower.name} to exit with an error")
        assert follower.proc is not None and follower.proc.returncode == 1
    finally:
        registry.kill_all()
        for data in (tmp_path / "members").glob("*/"):
            shutil.rmtree(data, ignore_errors=True)  # each WAL preallocates 64 MiB


def _applied(member: Member) -> int | None:
    code, body = http("GET", f"http://127.0.0.1:{member.metrics_port}/status", timeout=2)
    return int(body["applied"]) if code == 200 else None
