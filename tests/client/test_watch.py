"""Watches of ``consensus.client`` against a real etcd: events, options, multiplexing, cancel, errors."""

from __future__ import annotations

import asyncio
import gc

import pytest

from consensus.api.gen.etcd.mvccpb import kv_pb2
from consensus.client import Client, CompactedError, Watch, op_put, prefix_end


async def collect(watch: Watch, count: int, timeout: float = 5.0) -> list[kv_pb2.Event]:
    """The next ``count`` events of ``watch`` (progress notifications skipped)."""
    events: list[kv_pb2.Event] = []

    async def run() -> None:
        async for batch in watch:
            events.extend(batch.events)
            if len(events) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return events


async def test_watch_key_events_after_creation(client: Client, prefix: str) -> None:
    key = prefix + "k"
    async with client.watch(key, prev_kv=True) as watch:
        first = await client.put(key, "1")
        await client.put(prefix + "other", "x")  # not watched
        await client.put(key, "2")
        await client.delete_range(key)
        events = await collect(watch, 3)
    assert [e.type for e in events] == [kv_pb2.Event.PUT, kv_pb2.Event.PUT, kv_pb2.Event.DELETE]
    assert [e.kv.value for e in events] == [b"1", b"2", b""]
    assert events[0].kv.mod_revision == first.header.revision
    assert events[1].prev_kv.value == b"1" and events[2].prev_kv.value == b"2"
    assert watch.next_revision == events[-1].kv.mod_revision + 1


async def test_watch_prefix_from_history_and_filters(client: Client, prefix: str) -> None:
    start = (await client.put(prefix + "a", "1")).header.revision
    await client.put(prefix + "b", "2")
    await client.delete_range(prefix + "a")
    history = client.watch(prefix, prefix_end(prefix), start_revision=start)
    events = await collect(history, 3)
    assert [(e.type, e.kv.key[-1:]) for e in events] == [
        (kv_pb2.Event.PUT, b"a"), (kv_pb2.Event.PUT, b"b"), (kv_pb2.Event.DELETE, b"a")]
    await history.close()

    no_puts = client.watch_prefix(prefix, start_revision=start, filters=["noput"])
    assert [e.type for e in await collect(no_puts, 1)] == [kv_pb2.Event.DELETE]
    await no_puts.close()


async def test_txn_events_arrive_in_one_batch(client: Client, prefix: str) -> None:
    async with client.watch_prefix(prefix) as watch:
        response = await client.txn(success=[op_put(prefix + "x", "1"), op_put(prefix + "y", "2")])
        batch = await asyncio.wait_for(watch.__anext__(), 5)
    assert [e.kv.key[-1:] for e in batch.events] == [b"x", b"y"]
    assert {e.kv.mod_revision for e in batch.events} == {response.header.revision}


async def test_many_watches_share_one_stream(client: Client, prefix: str) -> None:
    watches = [client.watch(f"{prefix}{i}") for i in range(20)]
    created = await asyncio.gather(*(w.wait_created() for w in watches))
    assert all(rev > 0 for rev in created)
    for i in range(20):
        await client.put(f"{prefix}{i}", str(i))
    for i, watch in enumerate(watches):
        [event] = await collect(watch, 1)
        assert event.kv.value == str(i).encode()
    assert client._watches.streams_opened == 1
    assert len({w.watch_id for w in watches}) == 20
    for watch in watches:
        await watch.close()


async def test_closing_a_watch_ends_iteration_and_cancels_on_the_server(
    client: Client, prefix: str
) -> None:
    watch = client.watch(prefix + "k")
    await watch.wait_created()
    await client.put(prefix + "k", "before")
    [event] = await collect(watch, 1)
    assert event.kv.value == b"before"
    await watch.close()
    with pytest.raises(StopAsyncIteration):
        await watch.__anext__()
    assert client._watches._by_server_id.get(watch.watch_id or -1) is None

    # Breaking out of `async for` over an unreferenced watch cancels it too.
    async def first_event() -> bytes:
        async for batch in client.watch(prefix + "j"):
            return batch.events[0].kv.value
        raise AssertionError("unreachable")

    task = asyncio.create_task(first_event())
    await asyncio.sleep(0.2)
    await client.put(prefix + "j", "v")
    assert await asyncio.wait_for(task, 5) == b"v"
    gc.collect()
    assert not client._watches._states  # every watch of this test is gone


async def test_progress_notifications(client: Client, prefix: str) -> None:
    async with client.watch(prefix + "quiet") as watch:
        head = (await client.put(prefix + "elsewhere", "x")).header.revision
        assert await client.request_progress()
        batch = await asyncio.wait_for(watch.__anext__(), 5)
    assert not batch.events and batch.header.revision >= head


async def test_fragmented_responses_are_reassembled(client: Client, prefix: str) -> None:
    big = b"v" * (1024 * 1024)
    start = (await client.put(prefix + "0", big)).header.revision
    await client.put(prefix + "1", big)
    await client.put(prefix + "2", big)
    # The catch-up batch (3 MiB) exceeds etcd's 1.5 MiB request limit: sent in fragments.
    async with client.watch_prefix(prefix, start_revision=start, fragment=True) as watch:
        batch = await asyncio.wait_for(watch.__anext__(), 10)
    assert [e.kv.key[-1:] for e in batch.events] == [b"0", b"1", b"2"]
    assert not batch.fragment


async def test_compacted_start_revision_raises_compacted_error(
    client: Client, prefix: str
) -> None:
    first = await client.put(prefix + "k", "1")
    second = await client.put(prefix + "k", "2")
    await client.compact(second.header.revision)
    watch = client.watch(prefix + "k", start_revision=first.header.revision)
    with pytest.raises(CompactedError) as info:
        async for _ in watch:
            pass
    assert info.value.compact_revision == second.header.revision
    with pytest.raises(StopAsyncIteration):  # the iterator stays finished
        await watch.__anext__()


async def test_client_close_ends_watches(etcd_endpoints: list[str], prefix: str) -> None:
    from consensus.client import ClientClosedError

    c = Client(etcd_endpoints)
    watch = c.watch(prefix + "k")
    await watch.wait_created()
    await c.close()
    with pytest.raises(ClientClosedError):
        await watch.__anext__()
    with pytest.raises(ClientClosedError):
        await c.get("x")
