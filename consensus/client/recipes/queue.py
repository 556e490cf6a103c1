"""The queue both recipes share: a key per contender under a prefix, ordered by create revision."""

from __future__ import annotations

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.mvccpb import kv_pb2
from consensus.client.client import Client
from consensus.client.keys import prefix_end
from consensus.client.kv import compare_create, op_get, op_put
from consensus.client.recipes.session import Session


async def enqueue(session: Session, prefix: bytes, value: bytes) -> tuple[bytes, int]:
    """Put ``<prefix><lease id in hex>`` on the session's lease if absent; (key, create revision).

    The same session enqueued twice gets its existing place (as etcd's
    ``concurrency`` does).
    """
    key = prefix + f"{session.lease_id:x}".encode()
    response: pb.TxnResponse = await session.client.txn(
        compare=[compare_create(key, "=", 0)],
        success=[op_put(key, value, lease=session.lease_id)],
        failure=[op_get(key)],
    )
    if response.succeeded:
        return key, int(response.header.revision)
    kvs = response.responses[0].response_range.kvs
    if not kvs:  # deleted between the compare and now: impossible inside one txn
        raise RuntimeError(f"queue key {key!r} vanished inside a transaction")
    return key, int(kvs[0].create_revision)


async def first(client: Client, prefix: bytes) -> tuple[kv_pb2.KeyValue | None, int]:
    """The oldest key under ``prefix`` (the holder), and the revision of the read."""
    response = await client.range(prefix, prefix_end(prefix), limit=1, sort_order="ascend",
                                  sort_target="create")
    return (response.kvs[0] if response.kvs else None), int(response.header.revision)


async def wait_for_turn(client: Client, prefix: bytes, my_revision: int, my_key: bytes) -> None:
    """Return once no key under ``prefix`` is older than ``my_revision``.

    Waits for the deletion of the newest older key, again and again (each
    waiter watches only its predecessor). Raises ``LookupError`` if
    ``my_key`` itself disappears meanwhile (its lease expired).
    """
    while True:
        response = await client.range(
            prefix, prefix_end(prefix), limit=1, sort_order="descend", sort_target="create",
            max_create_revision=my_revision - 1,
        )
        if not response.kvs:
            mine = await client.get(my_key)
            if mine is None or int(mine.create_revision) != my_revision:
                raise LookupError(f"{my_key!r} is gone (its session expired)")
            return
        predecessor = bytes(response.kvs[0].key)
        async with client.watch(predecessor,
                                start_revision=int(response.header.revision) + 1) as watch:
            async for batch in watch:
                if any(e.type == kv_pb2.Event.DELETE for e in batch.events):
                    break
