"""Lease calls and the keep-alive helper of ``consensus.client`` against a real etcd."""

from __future__ import annotations

import asyncio

import pytest

from consensus.client import Client, EtcdError, LeaseNotFoundError
from consensus.client.errors import LeaseExistsError


async def test_grant_inspect_revoke(client: Client, prefix: str) -> None:
    lease = await client.lease_grant(60)
    assert lease.ID > 0 and lease.TTL == 60
    await client.put(prefix + "a", "1", lease=lease.ID)
    await client.put(prefix + "b", "2", lease=lease.ID)
    ttl = await client.lease_time_to_live(lease.ID, keys=True)
    assert ttl.grantedTTL == 60 and 55 <= ttl.TTL <= 60
    assert sorted(ttl.keys) == [(prefix + "a").encode(), (prefix + "b").encode()]
    assert lease.ID in {status.ID for status in (await client.lease_leases()).leases}

    renewed = await client.lease_keepalive_once(lease.ID)
    assert renewed.ID == lease.ID and renewed.TTL == 60

    await client.lease_revoke(lease.ID)
    assert (await client.get_prefix(prefix, count_only=True)).count == 0
    assert (await client.lease_time_to_live(lease.ID)).TTL == -1
    with pytest.raises(LeaseNotFoundError):
        await client.lease_revoke(lease.ID)
    with pytest.raises(LeaseNotFoundError):
        await client.lease_keepalive_once(lease.ID)


async def test_grant_with_chosen_id(client: Client) -> None:
    lease = await client.lease_grant(30, id=0x5EED)
    assert lease.ID == 0x5EED
    with pytest.raises(LeaseExistsError):
        await client.lease_grant(30, id=0x5EED)
    await client.lease_revoke(0x5EED)


async def test_keep_alive_renews_at_a_third_of_the_ttl(client: Client, prefix: str) -> None:
    lease = await client.lease_grant(2)
    await client.put(prefix + "k", "v", lease=lease.ID)
    async with client.keep_alive(lease.ID) as keeper:
        await asyncio.sleep(2.5)  # past the TTL
        assert keeper.running and not keeper.lost
        assert keeper.ttl == 2
        assert 3 <= keeper.renewals <= 7  # one at start, then every ~0.67 s
        assert await client.get(prefix + "k") is not None
    await asyncio.sleep(0.1)
    remaining = (await client.lease_time_to_live(lease.ID)).TTL
    assert remaining >= 1  # renewed moments ago; not revoked by closing the helper
    await client.lease_revoke(lease.ID)


async def test_keep_alive_reports_a_lost_lease(client: Client) -> None:
    lease = await client.lease_grant(3)
    lost: list[EtcdError] = []
    keeper = client.keep_alive(lease.ID, on_lost=lost.append)
    await keeper.wait_renewed(timeout=5)
    await client.lease_revoke(lease.ID)
    error = await asyncio.wait_for(keeper.wait_lost(), 5)
    assert isinstance(error, LeaseNotFoundError)
    assert keeper.lost and not keeper.running and lost == [error]
    await keeper.close()


async def test_many_keep_alives_share_one_stream(client: Client) -> None:
    leases = [(await client.lease_grant(3)).ID for _ in range(5)]
    keepers = [client.keep_alive(lease) for lease in leases]
    await asyncio.gather(*(k.wait_renewed(timeout=5) for k in keepers))
    stream = client._keepalives._stream
    assert stream is not None and stream.error is None
    for keeper in keepers:
        await keeper.close()
    for lease in leases:
        await client.lease_revoke(lease)
