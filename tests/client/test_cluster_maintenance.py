"""Cluster and Maintenance calls of ``consensus.client`` against a real single-member etcd."""

from __future__ import annotations

import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client import Client
from consensus.client.errors import LearnerNotReadyError, MemberError, MemberNotFoundError
from tests.etcd_process import EtcdCluster, free_port


async def test_status_hash_defragment_alarms(client: Client, etcd: EtcdCluster) -> None:
    status = await client.status()
    assert status.version.startswith("3.4")
    assert status.leader == status.header.member_id and status.dbSize > 0
    pinned = await client.status(endpoint="http://" + etcd[0].endpoint)
    assert pinned.header.member_id == status.header.member_id

    await client.put("/test/hash", "x")
    first = await client.hash_kv()
    again = await client.hash_kv(first.header.revision)
    assert first.hash == again.hash and first.hash != 0
    assert isinstance(await client.defragment(), pb.DefragmentResponse)

    alarms = await client.alarm_list()
    assert list(alarms.alarms) == []
    assert list((await client.alarm_disarm()).alarms) == []


async def test_snapshot_streams_the_backend(client: Client) -> None:
    chunks = [chunk async for chunk in client.snapshot()]
    data = b"".join(chunks)
    status = await client.status()
    # A bbolt file (plus etcd's 32-byte sha256 trailer) at least as big as the db.
    assert len(data) >= status.dbSize > 0


async def test_member_calls(client: Client) -> None:
    members = (await client.member_list()).members
    assert len(members) == 1 and members[0].name == "m0"

    url = f"http://127.0.0.1:{free_port()}"
    added = await client.member_add([url], is_learner=True)
    assert added.member.isLearner and list(added.member.peerURLs) == [url]
    assert len(added.members) == 2
    with pytest.raises(MemberError):  # 3.4: "member ID already exist" (same URLs, same ID)
        await client.member_add([url], is_learner=True)
    with pytest.raises(LearnerNotReadyError):  # it never started, so it is not in sync
        await client.member_promote(added.member.ID)

    moved = f"http://127.0.0.1:{free_port()}"
    await client.member_update(added.member.ID, [moved])
    listed = {m.ID: m for m in (await client.member_list()).members}
    assert list(listed[added.member.ID].peerURLs) == [moved]

    await client.member_remove(added.member.ID)
    assert len((await client.member_list()).members) == 1
    with pytest.raises(MemberNotFoundError):
        await client.member_remove(added.member.ID)
