"""Failover of ``consensus.client`` on a real 3-member etcd: members are killed under it.

Every test restores the cluster (restarts what it killed) before it ends, so
the module shares one cluster.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consensus.api.gen.etcd.mvccpb import kv_pb2
from consensus.client import Client, UncertainResultError
from tests.etcd_process import EtcdCluster, EtcdMember


def restore(cluster: EtcdCluster, *killed: EtcdMember) -> None:
    for member in killed:
        if not member.running:
            cluster.restart(member, wait=False)
    cluster.wait_ready()


async def test_reads_and_writes_move_past_a_killed_member(etcd3: EtcdCluster) -> None:
    victim = etcd3.followers()[0]
    order = [m.endpoint for m in [victim, *[m for m in etcd3 if m is not victim]]]
    async with Client(order, timeout=5.0) as reader:
        await reader.put("/failover/k", "1")
        assert reader.endpoint == victim.endpoint
        victim.kill()
        try:
            # The open connection breaks under the read: reads are retried elsewhere.
            kv = await reader.get("/failover/k")
            assert kv is not None and kv.value == b"1"
            assert reader.endpoint != victim.endpoint
            assert len((await reader.member_list()).members) == 3
            # A client whose first contact is the dead member is refused before
            # sending: even a put is then safely retried on the next member.
            async with Client(order, timeout=5.0) as writer:
                await writer.put("/failover/k", "2")
                assert writer.endpoint != victim.endpoint
            kv = await reader.get("/failover/k")
            assert kv is not None and kv.value == b"2"
        finally:
            restore(etcd3, victim)


async def test_watch_resumes_on_another_member_exactly_once(etcd3: EtcdCluster) -> None:
    prefix = "/failover/watch/"
    followers = etcd3.followers()
    leader = next(m for m in etcd3 if m not in followers)
    async with Client([m.endpoint for m in [*followers, leader]]) as watcher:
        watch = watcher.watch_prefix(prefix)
        await watch.wait_created()
        # The victim is the member the watch stream is on: the first follower, unless the client
        # already moved past it (a slow answer on a loaded machine); never the leader, so that
        # the writer's puts are not caught in an election.
        victim = next(m for m in etcd3 if m.endpoint == watcher.watch_endpoint)
        assert victim is not leader, "the watch moved past both followers"
        survivors = [m for m in etcd3 if m is not victim]
        async with Client([m.endpoint for m in survivors]) as writer:
            await _watch_resumes_exactly_once(etcd3, watcher, writer, watch, victim, prefix)


async def _watch_resumes_exactly_once(
    etcd3: EtcdCluster, watcher: Client, writer: Client, watch: Any, victim: EtcdMember, prefix: str
) -> None:
    resumes_before = len(watch.resumes)
    lease = await writer.lease_grant(2)
    keeper = watcher.keep_alive(lease.ID)
    await keeper.wait_renewed(timeout=5)

    written: list[int] = []
    events: list[kv_pb2.Event] = []
    total = 120

    async def write() -> None:
        for i in range(total):
            written.append((await writer.put(f"{prefix}{i:03}", str(i))).header.revision)
            await asyncio.sleep(0.004)

    async def read() -> None:
        async for batch in watch:
            events.extend(batch.events)
            if len(events) >= total:
                return

    reading = asyncio.create_task(read())
    writing = asyncio.create_task(write())
    try:
        while len(written) < total // 3:
            await asyncio.sleep(0.01)
        victim.kill()  # the member the watch stream (and the keep-alive) is on
        await asyncio.wait_for(writing, 20)
        await asyncio.wait_for(reading, 10)
    finally:
        writing.cancel()
        reading.cancel()
        restore(etcd3, victim)

    revisions = [e.kv.mod_revision for e in events]
    assert revisions == written  # every event, once, in order
    assert [e.kv.value for e in events] == [str(i).encode() for i in range(total)]
    assert watcher.watch_endpoint != victim.endpoint
    # The watch was re-created after the kill from a revision it had not seen,
    # replaying what was written while no stream was open.
    assert len(watch.resumes) == resumes_before + 1
    resumed = watch.resumes[-1]
    assert written[0] < resumed <= written[-1] and resumed - 1 in written
    # The keep-alive moved to a surviving member too, without losing the lease.
    await keeper.wait_renewed(timeout=5)
    assert not keeper.lost
    await keeper.close()
    await watch.close()
    await writer.lease_revoke(lease.ID)


async def test_put_without_quorum_is_uncertain_and_not_retried(etcd3: EtcdCluster) -> None:
    leader = etcd3.leader()
    followers = [m for m in etcd3 if m is not leader]
    async with Client([leader.endpoint]) as client:
        await client.put("/failover/q", "before")
        for member in followers:
            member.kill()
        try:
            # The leader accepts the proposal but cannot commit it: the outcome is unknown.
            with pytest.raises(UncertainResultError):
                await client.put("/failover/q", "maybe", timeout=1.0)
        finally:
            restore(etcd3, *followers)
        kv = await client.get("/failover/q")
        # After the quorum is back, the uncommitted entry may or may not have survived.
        assert kv is not None and kv.value in (b"before", b"maybe")


async def test_move_leader(etcd3: EtcdCluster) -> None:
    leader = etcd3.leader()
    target = next(m for m in etcd3 if m is not leader)
    async with Client(etcd3.endpoints) as client:
        target_id = (await client.status(endpoint=target.endpoint)).header.member_id
        await client.move_leader(target_id)
        status = await client.status(endpoint=target.endpoint)
        assert status.leader == target_id
