"""KV calls of ``consensus.client`` against a real etcd: range options, put, delete, txn, compact, errors."""

from __future__ import annotations

import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client import (
    Client,
    CompactedError,
    DuplicateKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    RequestTooLargeError,
    TooManyOpsError,
    compare_create,
    compare_lease,
    compare_mod,
    compare_value,
    compare_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
    prefix_end,
)
from consensus.client.errors import EmptyKeyError


def test_prefix_end_and_builders_need_no_server() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end("a\xff") == b"a\xc3\xc0"  # str is UTF-8 first: "\xff" is c3 bf
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"
    assert prefix_end(b"") == b"\0"
    cmp = compare_mod("k", "=", 5)
    assert (cmp.key, cmp.target, cmp.result, cmp.mod_revision) == (
        b"k", pb.Compare.MOD, pb.Compare.EQUAL, 5)
    assert compare_value(b"k", "!=", "v").result == pb.Compare.NOT_EQUAL
    assert compare_version("k", "<", 2).target == pb.Compare.VERSION
    assert compare_create("k", ">", 1).result == pb.Compare.GREATER
    assert compare_lease("k", "==", 7).lease == 7
    assert op_put("k", "v", lease=3).request_put.lease == 3
    assert op_get("k", "l", limit=2).request_range.range_end == b"l"
    assert op_delete("k", prev_kv=True).request_delete_range.prev_kv
    assert len(op_txn([cmp], [op_put("a", "b")]).request_txn.success) == 1
    with pytest.raises(ValueError):
        compare_mod("k", "~", 1)  # type: ignore[arg-type]


async def test_put_get_str_and_bytes(client: Client, prefix: str) -> None:
    put = await client.put(prefix + "a", "1")
    assert put.header.revision > 0
    kv = await client.get(prefix + "a")
    assert kv is not None
    assert (kv.key, kv.value, kv.version) == ((prefix + "a").encode(), b"1", 1)
    assert kv.create_revision == kv.mod_revision == put.header.revision
    await client.put((prefix + "b").encode(), b"\x00\xff")
    kv = await client.get((prefix + "b").encode())
    assert kv is not None and kv.value == b"\x00\xff"
    assert await client.get(prefix + "missing") is None
    # prev_kv, and a second version
    put = await client.put(prefix + "a", "2", prev_kv=True)
    assert put.prev_kv.value == b"1"
    kv = await client.get(prefix + "a")
    assert kv is not None and (kv.value, kv.version) == (b"2", 2)
    # serializable read and a read at an old revision
    old = await client.get(prefix + "a", revision=put.header.revision - 2, serializable=True)
    assert old is not None and old.value == b"1"


async def test_range_options(client: Client, prefix: str) -> None:
    revisions = {}
    for name, value in [("c", "3"), ("a", "1"), ("b", "22")]:
        revisions[name] = (await client.put(prefix + name, value)).header.revision
    await client.put(prefix + "a", "11")  # a: mod revision now the newest
    everything = await client.get_prefix(prefix)
    assert [kv.key for kv in everything.kvs] == [(prefix + n).encode() for n in "abc"]
    assert everything.count == 3 and not everything.more

    limited = await client.get_prefix(prefix, limit=2)
    assert len(limited.kvs) == 2 and limited.more and limited.count == 3
    counted = await client.get_prefix(prefix, count_only=True)
    assert counted.count == 3 and not counted.kvs
    keys = await client.get_prefix(prefix, keys_only=True)
    assert all(kv.value == b"" for kv in keys.kvs)

    by_value = await client.get_prefix(prefix, sort_order="descend", sort_target="value")
    assert [kv.value for kv in by_value.kvs] == [b"3", b"22", b"11"]
    by_mod = await client.get_prefix(prefix, sort_order="ascend", sort_target="mod")
    assert [kv.key[-1:] for kv in by_mod.kvs] == [b"c", b"b", b"a"]

    explicit = await client.range(prefix + "a", prefix + "c")
    assert [kv.key[-1:] for kv in explicit.kvs] == [b"a", b"b"]
    newer = await client.range(prefix, prefix_end(prefix), min_mod_revision=revisions["b"])
    assert sorted(kv.key[-1:] for kv in newer.kvs) == [b"a", b"b"]
    older = await client.range(prefix, prefix_end(prefix), max_create_revision=revisions["a"])
    assert sorted(kv.key[-1:] for kv in older.kvs) == [b"a", b"c"]
    historic = await client.get_prefix(prefix, revision=revisions["a"])
    assert [kv.key[-1:] for kv in historic.kvs] == [b"a", b"c"]


async def test_put_ignore_value_and_lease(client: Client, prefix: str) -> None:
    lease = await client.lease_grant(30)
    await client.put(prefix + "k", "v", lease=lease.ID)
    await client.put(prefix + "k", "", ignore_value=True)  # keeps the value, drops the lease
    kv = await client.get(prefix + "k")
    assert kv is not None and (kv.value, kv.lease) == (b"v", 0)
    await client.put(prefix + "k", "w", lease=lease.ID)
    await client.put(prefix + "k", "x", ignore_lease=True)
    kv = await client.get(prefix + "k")
    assert kv is not None and (kv.value, kv.lease) == (b"x", lease.ID)
    with pytest.raises(KeyNotFoundError) as info:
        await client.put(prefix + "missing", "", ignore_value=True)
    assert info.value.message == "etcdserver: key not found"
    await client.lease_revoke(lease.ID)


async def test_delete_range_and_prefix(client: Client, prefix: str) -> None:
    for name in "abcd":
        await client.put(prefix + name, name)
    one = await client.delete_range(prefix + "a", prev_kv=True)
    assert one.deleted == 1 and one.prev_kvs[0].value == b"a"
    two = await client.delete_range(prefix + "b", prefix + "d")
    assert two.deleted == 2
    rest = await client.delete_prefix(prefix)
    assert rest.deleted == 1
    assert (await client.get_prefix(prefix, count_only=True)).count == 0
    assert (await client.delete_range(prefix + "a")).deleted == 0


async def test_txn_compare_and_swap(client: Client, prefix: str) -> None:
    key = prefix + "flag"
    put = await client.put(key, "v1")
    won = await client.txn(
        compare=[compare_mod(key, "=", put.header.revision)],
        success=[op_put(key, "v2"), op_get(key)],
        failure=[op_get(key)],
    )
    assert won.succeeded
    assert won.responses[1].response_range.kvs[0].value == b"v2"
    lost = await client.txn(
        compare=[compare_mod(key, "=", put.header.revision)],
        success=[op_put(key, "v3")],
        failure=[op_get(key)],
    )
    assert not lost.succeeded
    assert lost.responses[0].response_range.kvs[0].value == b"v2"

    created = await client.txn(  # create-if-absent
        compare=[compare_create(prefix + "new", "=", 0)],
        success=[op_put(prefix + "new", "x")],
    )
    assert created.succeeded
    mixed = await client.txn(
        compare=[compare_value(key, "=", "v2"), compare_version(key, ">", 1),
                 compare_lease(key, "=", 0)],
        success=[
            op_delete(prefix + "new", prev_kv=True),
            # etcd evaluates nested compares before any op runs: "new" still exists here.
            op_txn([compare_version(prefix + "new", "=", 1)], [op_put(prefix + "nested", "n")]),
        ],
    )
    assert mixed.succeeded
    assert mixed.responses[0].response_delete_range.prev_kvs[0].value == b"x"
    assert mixed.responses[1].response_txn.succeeded
    assert (await client.get(prefix + "nested")) is not None
    # A read-only txn is allowed too (and retried like a read).
    read = await client.txn(success=[op_get(prefix, prefix_end(prefix), count_only=True)])
    assert read.responses[0].response_range.count == 2


async def test_txn_refusals(client: Client, prefix: str) -> None:
    with pytest.raises(DuplicateKeyError):
        await client.txn(success=[op_put(prefix + "a", "1"), op_put(prefix + "a", "2")])
    with pytest.raises(TooManyOpsError):
        await client.txn(success=[op_put(f"{prefix}{i}", "v") for i in range(129)])
    with pytest.raises(EmptyKeyError):
        await client.put("", "v")


async def test_request_too_large(client: Client, prefix: str) -> None:
    with pytest.raises(RequestTooLargeError) as info:
        await client.put(prefix + "big", b"x" * (1600 * 1024))
    assert info.value.message == "etcdserver: request is too large"


async def test_compact_and_revision_errors(client: Client, prefix: str) -> None:
    first = await client.put(prefix + "k", "1")
    second = await client.put(prefix + "k", "2")
    await client.compact(second.header.revision, physical=True)
    with pytest.raises(CompactedError) as info:
        await client.get(prefix + "k", revision=first.header.revision)
    assert info.value.message == "etcdserver: mvcc: required revision has been compacted"
    assert info.value.compact_revision is None
    with pytest.raises(CompactedError):
        await client.compact(first.header.revision)
    with pytest.raises(FutureRevisionError):
        await client.get(prefix + "k", revision=second.header.revision + 1000)
    kv = await client.get(prefix + "k", revision=second.header.revision)
    assert kv is not None and kv.value == b"2"
