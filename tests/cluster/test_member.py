"""One member in-process: etcd's error texts, snapshots and recovery, batched reads, health."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from consensus.server import errors
from consensus.server.cluster import InitialCluster
from consensus.server.config import MemberConfig
from consensus.server.fsm import DigestStateMachine
from consensus.server.http1 import HttpResponder
from consensus.server.member import Member
from consensus.server.metrics_endpoints import member_routes

from .harness import free_port, http

pytestmark = pytest.mark.timeout(30)


def config(tmp_path: Path, names: list[str], **overrides: object) -> MemberConfig:
    urls = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    cfg = MemberConfig(
        name=names[0],
        data_dir=str(tmp_path / names[0]),
        initial_cluster=InitialCluster.parse(",".join(f"{n}={u}" for n, u in urls.items()), "t"),
        listen_peer_urls=[urls[names[0]]],
        initial_advertise_peer_urls=[urls[names[0]]],
        heartbeat_interval_ms=10,
        election_timeout_ms=100,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


async def test_member_without_a_quorum_refuses_with_etcds_messages(tmp_path: Path) -> None:
    member = Member(config(tmp_path, ["a", "b", "c"]))  # b and c never start
    await member.start()
    responder = HttpResponder(member_routes(member))
    metrics_url = f"http://127.0.0.1:{free_port()}"
    await responder.listen([metrics_url])
    try:
        with pytest.raises(errors.NoLeaderError, match=r"^etcdserver: no leader$"):
            await member.propose(b"x")
        with pytest.raises(errors.NoLeaderError):
            await member.read_index()
        code, body = await asyncio.to_thread(http, "GET", f"{metrics_url}/health")
        assert (code, body) == (503, {"health": "false", "reason": "RAFT NO LEADER"})
        assert member.metrics.proposals_failed == 1
    finally:
        await responder.stop()
        await member.stop()
    with pytest.raises(errors.StoppedError, match="etcdserver: server stopped"):
        await member.propose(b"x")


async def test_single_member_snapshots_compacts_and_recovers(tmp_path: Path) -> None:
    cfg = config(tmp_path, ["solo"], snapshot_count=10, snapshot_catchup_entries=0)
    member = Member(cfg)
    await member.start()
    try:
        assert await member.wait_for_leader(5)
        results = [await member.propose(f"v{i}".encode()) for i in range(25)]
        assert results[-1] == (member.applied, 25)
        with pytest.raises(errors.RequestTooLargeError, match="request is too large"):
            await member.propose(b"x" * (cfg.max_request_bytes + 1))
        # Periodic snapshots are written by a background child: wait for the second.
        deadline = asyncio.get_running_loop().time() + 10
        while member.status().snapshot_index < 20 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert member.metrics.snapshots_taken >= 2
        assert member.status().snapshot_index >= 20
        before = member.fsm
        assert isinstance(before, DigestStateMachine)
        digest, applied = before.digest, member.applied
    finally:
        await member.stop()

    again = Member(cfg)
    await again.start()
    try:
        assert await again.wait_for_leader(5)
        await again.read_index()
        fsm = again.fsm
        assert isinstance(fsm, DigestStateMachine)
        assert again.status().snapshot_index >= 20
        assert fsm.applied_index >= applied and fsm.count == 25 and fsm.digest == digest
        assert [m.name for m in again.members()] == ["solo"]
    finally:
        await again.stop()


async def test_concurrent_reads_share_read_index_requests(tmp_path: Path) -> None:
    member = Member(config(tmp_path, ["solo"]))
    await member.start()
    try:
        assert await member.wait_for_leader(5)
        index = (await member.propose(b"w"))
        assert isinstance(index, tuple)
        rounds_before = member.metrics.read_index_rounds
        results = await asyncio.gather(*(member.read_index() for _ in range(200)))
        assert min(results) >= index[0]
        # The first caller starts a round; everyone arriving meanwhile shares the next one.
        assert member.metrics.read_index_rounds - rounds_before <= 2
    finally:
        await member.stop()


async def test_a_stalled_event_loop_is_logged_and_counted_in_the_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    member = Member(config(tmp_path, ["solo"]))
    await member.start()
    responder = HttpResponder(member_routes(member))
    metrics_url = f"http://127.0.0.1:{free_port()}"
    await responder.listen([metrics_url])
    try:
        assert await member.wait_for_leader(5)
        time.sleep(0.4)  # something holds the loop (a long apply, a full GC...)
        await asyncio.sleep(0.05)  # the next tick sees how late it is
        assert member.metrics.loop_stalls >= 1
        assert any("the event loop stalled: a tick ran" in r.getMessage() for r in caplog.records)
        code, body = await asyncio.to_thread(http, "GET", f"{metrics_url}/metrics")
        assert code == 200
        assert f"flagstaff_event_loop_stalls_total {member.metrics.loop_stalls}" in body
    finally:
        await responder.stop()
        await member.stop()
