"""The core's audit trail through its public doors: etcdctl, the etcd gRPC API and ``flagstaff.audit.v1``.

Every applied mutation carries its record (same apply): etcdctl writes are
recorded with their principal and before/after values, the platform's
on-behalf-of metadata lands in the record, the trail is invisible to Range and
HashKV (compared with a real etcd given the same commands), identical on every
member, survives a restart, reaches a member added later by snapshot, is
purged only past the retention, and is read permission-checked while core auth
is on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from consensus.api.gen.flagstaff.audit.v1 import audit_pb2 as apb
from consensus.client import Client, PermissionDeniedError
from tests.cluster.harness import Cluster, wait_until
from tests.etcd.etcdctl import etcdctl, ok

pytestmark = pytest.mark.timeout(240)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def records(endpoints: str, key: str = "", *, prefix: bool = True, **kw: Any) -> list[apb.Record]:
    """Every matching record, newest first, through the paging of Audit/List."""
    out: list[apb.Record] = []
    user = kw.pop("user", None)
    creds = {"username": user[0], "password": user[1]} if user else {}
    async with Client(endpoints.split(","), **creds) as client:
        token = ""
        while True:
            page = await client.audit_list(key, prefix=prefix, limit=2, page_token=token, **kw)
            out.extend(page.records)
            token = page.next_page_token
            if not token:
                return out


def change(record: apb.Record, i: int = 0) -> tuple[str, str | None, str | None]:
    c = record.changes[i]
    return (
        c.key.decode(),
        c.before.decode() if c.has_before else None,
        c.after.decode() if c.has_after else None,
    )


# -- the shared cluster (auth off) ----------------------------------------------------------------
def test_etcdctl_writes_are_recorded_with_before_and_after(flagstaff_cluster: Cluster) -> None:
    eps = flagstaff_cluster.endpoints
    ok(eps, "put", "/au/etcdctl/a", "one")
    ok(eps, "put", "/au/etcdctl/a", "two")
    ok(eps, "txn", stdin='\nput /au/etcdctl/b bee\ndel /au/etcdctl/a\n\n\n')
    ok(eps, "del", "/au/etcdctl/b")

    got = run(records(eps, "/au/etcdctl/"))
    assert [r.action for r in got] == ["delete", "txn", "put", "put"]
    assert all(r.principal == "anonymous" and r.source == "grpc" and r.actor == "" for r in got)
    delete, txn, second, first = got
    assert change(first) == ("/au/etcdctl/a", None, "one")
    assert change(second) == ("/au/etcdctl/a", "one", "two")
    assert sorted(change(txn, i) for i in range(2)) == [
        ("/au/etcdctl/a", "two", None), ("/au/etcdctl/b", None, "bee"),
    ]
    assert change(delete) == ("/au/etcdctl/b", "bee", None)
    revisions = [r.revision for r in got]
    assert revisions == sorted(revisions, reverse=True) and len(set(revisions)) == 4
    # The record's revision is the change's own revision (one apply).
    status = json.loads(ok(eps, "get", "/au/etcdctl/", "--prefix", "-w", "json"))
    assert status["header"]["revision"] >= delete.revision
    assert all(abs(r.time_ms - time.time() * 1000) < 10 * 60_000 for r in got)


def test_platform_metadata_and_the_key_filters(flagstaff_cluster: Cluster) -> None:
    async def go() -> list[apb.Record]:
        async with Client(flagstaff_cluster.endpoints.split(",")) as client:
            meta = (
                ("flagstaff-actor", "user:alice"), ("flagstaff-reason", "ticket 42"),
                ("flagstaff-source", "ui"),
            )
            await client.put("/au/meta/x", "1", metadata=meta)
            await client.put("/au/meta/y", "2", metadata=(("flagstaff-actor", "system:job"),
                                                          ("flagstaff-source", "job")))
            await client.put("/au/metaz", "3")
            page = await client.audit_list("/au/meta/x")
            assert [change(r) for r in page.records] == [("/au/meta/x", None, "1")]
            by_actor = await client.audit_list("/au/", prefix=True, actor="user:alice")
            assert [r.actor for r in by_actor.records] == ["user:alice"]
            by_source = await client.audit_list("/au/", prefix=True, source="job")
            assert [change(r) for r in by_source.records] == [("/au/meta/y", None, "2")]
            return list((await client.audit_list("/au/meta/", prefix=True)).records)

    got = run(go())
    assert [(r.actor, r.reason, r.source) for r in got] == [
        ("system:job", "", "job"), ("user:alice", "ticket 42", "ui"),
    ]


def test_range_and_hashkv_are_those_of_etcd_and_equal_on_every_member(
    flagstaff_cluster: Cluster, real_etcd: str
) -> None:
    commands = [
        ("put", "/hk/a", "1"), ("put", "/hk/b", "2"), ("put", "/hk/a", "3"), ("del", "/hk/b"),
        ("put", "/hk/c", "4"),
    ]
    for target in (flagstaff_cluster.endpoints, real_etcd):
        for cmd in commands:
            ok(target, *cmd)
    assert run(records(flagstaff_cluster.endpoints, "/hk/"))  # the trail has them

    def kvs(endpoint: str) -> list[tuple[str, str, int]]:
        doc = json.loads(ok(endpoint, "get", "/hk/", "--prefix", "-w", "json"))
        return [(kv["key"], kv["value"], kv["version"]) for kv in doc.get("kvs", [])]

    assert kvs(flagstaff_cluster.endpoints)

    assert kvs(flagstaff_cluster.endpoints) == kvs(real_etcd)
    # Everything from the empty key on: only user keys, nothing of the trail.
    doc = json.loads(ok(flagstaff_cluster.endpoints, "get", "", "--from-key", "-w", "json"))
    keys = [base64.b64decode(kv["key"]).decode() for kv in doc["kvs"]]
    assert doc["count"] == len(keys)
    assert all(k.startswith(("/au/", "/hk/")) for k in keys), keys  # what this module wrote

    # Every member hashes alike (the trail is not in HashKV) and holds the same trail.
    flagstaff_cluster.wait_converged(0)
    hashes = json.loads(ok(flagstaff_cluster.endpoints, "endpoint", "hashkv", "-w", "json"))
    assert len({h["HashKV"]["hash"] for h in hashes}) == 1

    def same_trail() -> bool:
        trails = [
            [r.SerializeToString() for r in run(records(n.endpoint, serializable=True))]
            for n in flagstaff_cluster.nodes
        ]
        return all(t == trails[0] for t in trails)

    wait_until(same_trail, 60, "every member to hold the same audit trail")


def test_a_fresh_member_with_a_trail_hashes_exactly_as_a_fresh_etcd(
    make_cluster: Callable[..., Cluster], tmp_path: Any
) -> None:
    # Same commands on a fresh Flagstaff member (recording its audit trail) and a
    # fresh etcd: the same revisions, the same key-value versions, the same HashKV.
    from tests.etcd_process import start_etcd

    cluster = make_cluster(size=1)
    cluster.wait_for_leader(timeout=30)
    etcd = start_etcd(tmp_path / "etcd", 1)
    try:
        targets = (cluster.endpoints, etcd.endpoints[0])
        for target in targets:
            ok(target, "put", "/a", "1")
            ok(target, "put", "/b", "2")
            ok(target, "put", "/a", "3")
            ok(target, "txn", stdin="\nput /c 4\ndel /b\n\n\n")
            ok(target, "del", "/c")
        assert len(run(records(cluster.endpoints))) == 5

        def state(target: str) -> tuple[Any, ...]:
            doc = json.loads(ok(target, "get", "", "--from-key", "-w", "json"))
            kvs = [(kv["key"], kv["value"], kv["create_revision"], kv["mod_revision"],
                    kv["version"]) for kv in doc["kvs"]]
            (hashed,) = json.loads(ok(target, "endpoint", "hashkv", "-w", "json"))
            return doc["header"]["revision"], kvs, hashed["HashKV"]["hash"]

        assert state(targets[0]) == state(targets[1])
    finally:
        etcd.kill_all()


def test_watch_delivers_new_records_and_resumes(flagstaff_cluster: Cluster) -> None:
    async def go() -> tuple[list[apb.Record], list[apb.Record]]:
        async with Client(flagstaff_cluster.endpoints.split(",")) as client:
            await client.put("/au/watch/0", "before")
            now = (await client.range("/au/watch/0")).header.revision
            stream = client.audit_watch("/au/watch/", prefix=True, start_revision=now + 1)
            first = asyncio.ensure_future(stream.__anext__())
            await client.put("/au/watch/1", "a")
            seen = [await asyncio.wait_for(first, 20)]
            await client.put("/au/unrelated", "x")
            await client.put("/au/watch/2", "b")
            seen.append(await asyncio.wait_for(stream.__anext__(), 20))
            await stream.aclose()  # type: ignore[attr-defined]
            # From a revision on: retained records first.
            replay = client.audit_watch("/au/watch/", prefix=True, start_revision=seen[0].revision)
            again = [await asyncio.wait_for(replay.__anext__(), 20) for _ in range(2)]
            await replay.aclose()  # type: ignore[attr-defined]
            return seen, again

    seen, again = run(go())
    assert [change(r) for r in seen] == [("/au/watch/1", None, "a"), ("/au/watch/2", None, "b")]
    assert [r.id for r in again] == [r.id for r in seen]


def test_lease_expiry_is_recorded(flagstaff_cluster: Cluster) -> None:
    eps = flagstaff_cluster.endpoints
    lease = ok(eps, "lease", "grant", "2").split()[1]
    ok(eps, "put", "/au/lease/k", "v", "--lease", lease)
    expired = wait_until(
        lambda: [r for r in run(records(eps, "/au/lease/")) if r.action == "lease_expire"] or None,
        30, "the lease to expire",
    )
    assert change(expired[0]) == ("/au/lease/k", "v", None)
    assert expired[0].principal == "anonymous" and expired[0].source == "expiry"


def test_a_writer_killed_right_after_the_ack_still_leaves_the_record(
    flagstaff_cluster: Cluster,
) -> None:
    # The writer SIGKILLs itself the instant the core acknowledges its put: had
    # the record been written by the writer (or anyone) after the change, it
    # would be missing. It came with the change, in the same apply.
    script = (
        "import asyncio, os, signal\n"
        "from consensus.client import Client\n"
        "async def main():\n"
        f"    c = Client({flagstaff_cluster.endpoints.split(',')!r})\n"
        "    await c.put('/au/crash/k', 'v1', metadata=(('flagstaff-actor', 'user:crash'),"
        " ('flagstaff-source', 'ui')))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), timeout=60)
    assert proc.returncode == -signal.SIGKILL
    got = run(records(flagstaff_cluster.endpoints, "/au/crash/"))
    assert [(r.actor, r.source, change(r)) for r in got] == [
        ("user:crash", "ui", ("/au/crash/k", None, "v1"))
    ]


def test_no_etcd_door_removes_records_deletes_compaction_and_defrag_keep_them(
    flagstaff_cluster: Cluster,
) -> None:
    eps = flagstaff_cluster.endpoints
    ok(eps, "put", "/au/ro/x", "kept")
    ok(eps, "del", "/au/ro/", "--prefix")
    revision = json.loads(ok(eps, "get", "/au/ro/x", "-w", "json"))["header"]["revision"]
    ok(eps, "compaction", str(revision))
    ok(eps, "defrag")
    got = run(records(eps, "/au/ro/"))
    assert [(r.action, change(r)) for r in got] == [
        ("delete", ("/au/ro/x", "kept", None)), ("put", ("/au/ro/x", None, "kept")),
    ]


# -- restarts and new members ----------------------------------------------------------------------
def test_the_trail_survives_restart_and_reaches_a_member_added_later(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        extra_args=["--snapshot-count", "10", "--experimental-snapshot-catchup-entries", "2"]
    )
    cluster.wait_for_leader(timeout=30)
    eps = cluster.endpoints
    for i in range(25):
        ok(eps, "put", f"/au/snap/{i % 5}", f"v{i}")
    before = [r.SerializeToString() for r in run(records(eps, "/au/snap/"))]
    assert len(before) == 25

    def restart() -> None:
        for node in cluster.nodes:
            node.kill9()
        cluster.start()
        cluster.wait_for_leader(timeout=30)

    async def watch_across_restart() -> list[apb.Record]:
        async with Client(eps.split(",")) as client:
            stream = client.audit_watch("/au/snap/", prefix=True, start_revision=1)
            seen = [await asyncio.wait_for(stream.__anext__(), 30) for _ in range(25)]
            await asyncio.to_thread(restart)  # the stream breaks; the client resumes after it
            await asyncio.to_thread(ok, eps, "put", "/au/snap/during", "y")
            seen.append(await asyncio.wait_for(stream.__anext__(), 60))
            await stream.aclose()  # type: ignore[attr-defined]
            return seen

    # Restart every member under an open Watch: the trail comes back from snapshot +
    # log, and the watcher gets the next record once, after the ones it had.
    watched = run(watch_across_restart())
    assert [r.SerializeToString() for r in reversed(watched[:25])] == before
    assert change(watched[25]) == ("/au/snap/during", None, "y")
    assert watched[25].id > watched[24].id
    now = [r.SerializeToString() for r in run(records(eps, "/au/snap/"))]
    assert now[1:] == before and len(now) == 26
    before = now

    # A member added now can only catch up by snapshot (the log is compacted).
    joiner = cluster.add_node_spec("n4")
    ok(eps, "member", "add", "n4", f"--peer-urls={joiner.peer_url}")
    joiner.start(cluster.initial_cluster + f",n4={joiner.peer_url}", state="existing")
    ok(eps, "put", "/au/snap/after", "x")

    def joined_trail() -> list[bytes] | None:
        got = [r.SerializeToString() for r in run(records(joiner.endpoint, "/au/snap/", serializable=True))]
        return got if len(got) == 27 else None

    trail = wait_until(joined_trail, 60, "the new member to hold the trail")
    assert trail[1:] == before
    assert "snapshot" in joiner.log_tail(400).lower()


def test_retention_purges_only_records_older_than_it(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(size=1, extra_args=["--audit-retention", "3s"])
    cluster.wait_for_leader(timeout=30)
    eps = cluster.endpoints
    ok(eps, "put", "/au/ret/old", "1")
    assert [change(r) for r in run(records(eps, "/au/ret/"))] == [("/au/ret/old", None, "1")]
    wait_until(lambda: not run(records(eps, "/au/ret/")), 60, "the old record to be purged")
    started_new = time.time()
    ok(eps, "put", "/au/ret/new", "2")
    got = run(records(eps, "/au/ret/"))
    # The new record stays (unless this machine stalled past the whole retention meanwhile).
    assert [change(r) for r in got] == [("/au/ret/new", None, "2")] or (
        not got and time.time() - 3 > started_new
    )
    # The key space itself is untouched by the purge.
    assert ok(eps, "get", "/au/ret/old", "--print-value-only").strip() == "1"


def test_bad_retention_is_refused_at_startup(tmp_path: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "consensus.cli", "node", "--data-dir", str(tmp_path / "d"),
         "--audit-retention", "soon"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "--audit-retention" in proc.stderr


# -- core auth ------------------------------------------------------------------------------------
ROOT = ("root", "rootpw")
ALICE = ("alice", "apw")
PLATFORM = ("platform", "ppw")


def test_with_auth_on_metadata_and_reading_are_permission_checked(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(size=1)
    cluster.wait_for_leader(timeout=30)
    eps = cluster.endpoints
    for cmd in (
        ("user", "add", "root:rootpw"), ("role", "add", "root"),
        ("user", "grant-role", "root", "root"),
        ("user", "add", "alice:apw"), ("role", "add", "reader"),
        ("role", "grant-permission", "reader", "readwrite", "/pub/", "--prefix"),
        ("user", "grant-role", "alice", "reader"),
        ("user", "add", "platform:ppw"), ("role", "add", "flagstaff-platform"),
        ("role", "grant-permission", "flagstaff-platform", "readwrite", "/", "--prefix"),
        ("user", "grant-role", "platform", "flagstaff-platform"),
        ("auth", "enable"),
    ):
        ok(eps, *cmd)

    ok(eps, "--user", "alice:apw", "put", "/pub/a", "1")
    ok(eps, "--user", "root:rootpw", "put", "/secret/s", "2")
    ok(eps, "--user", "root:rootpw", "txn", stdin="\nput /pub/b 3\nput /secret/t 4\n\n\n")

    async def go() -> None:
        meta = (("flagstaff-actor", "user:bob"), ("flagstaff-source", "ui"))
        async with Client(eps.split(","), username="alice", password="apw") as alice:
            # alice may not speak for anyone else.
            with pytest.raises(PermissionDeniedError, match="trusted principal"):
                await alice.put("/pub/forged", "x", metadata=meta)
            with pytest.raises(PermissionDeniedError):
                await alice.audit_append("login", detail="{}")
        async with Client(eps.split(","), username="platform", password="ppw") as platform:
            await platform.put("/pub/c", "5", metadata=meta)
            appended = await platform.audit_append(
                "login", detail='{"ok": true}', metadata=(("flagstaff-actor", "user:bob"),)
            )
            assert appended.id > 0
        assert await alice_view() == {
            ("/pub/a", "alice", ""), ("/pub/b", "root", ""), ("/pub/c", "platform", "user:bob"),
        }
        async with Client(eps.split(","), username="root", password="rootpw") as root:
            everything = (await root.audit_list(limit=100)).records
            assert {r.action for r in everything} >= {"put", "txn", "login"}
            assert any(c.key == b"/secret/t" for r in everything for c in r.changes)
            # The auth store's own changes are recorded too (no password, no signing key).
            auth_records = [(r.action, r.detail) for r in everything if r.action.startswith("auth.")]
            assert ("auth.user_add", '{"user": "alice"}') in auth_records
            assert ("auth.user_grant_role", '{"role": "reader", "user": "alice"}') in auth_records
            assert ("auth.enable", "") in auth_records
            assert "apw" not in str(auth_records) and "ppw" not in str(auth_records)
        async with Client(eps.split(",")) as anonymous:
            assert list((await anonymous.audit_list(limit=100)).records) == []
        assert "/pub/forged" not in ok(eps, "--user", "root:rootpw", "get", "/pub/", "--prefix")

    async def alice_view() -> set[tuple[str, str, str]]:
        async with Client(eps.split(","), username="alice", password="apw") as alice:
            seen = (await alice.audit_list(limit=100)).records
            watched = alice.audit_watch(start_revision=1)
            streamed = [await asyncio.wait_for(watched.__anext__(), 20) for _ in range(3)]
            await watched.aclose()  # type: ignore[attr-defined]
        assert [r.id for r in streamed] == sorted(r.id for r in seen)
        # Only readable keys, no platform events; the txn is cut down to /pub/b.
        return {(c.key.decode(), r.principal, r.actor) for r in seen for c in r.changes}

    run(go())
    assert etcdctl(eps, "get", "/pub/a").returncode != 0  # auth really is on


# -- the state machine's apply (deterministic, no processes) ------------------------------------
def _apply_put(fsm: Any, index: int, key: bytes, time_ms: int) -> None:
    from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
    from consensus.server.internal_request import InternalRequest, Op

    body = pb.PutRequest(key=key, value=b"v").SerializeToString()
    fsm.apply(index, 1, InternalRequest(Op.PUT, body, time_ms).encode())


def test_a_purge_entry_drops_exactly_the_records_older_than_its_cutoff() -> None:
    from consensus.server.etcd_state import EtcdStateMachine
    from consensus.server.internal_request import InternalRequest, Op

    fsm = EtcdStateMachine()
    # Proposers' clocks differ a little: times are not in id order.
    for i, t in enumerate([1000, 3000, 1999, 2000, 5000], start=1):
        _apply_put(fsm, i, b"/k%d" % i, t)
    hash_before = fsm.kv.hash_kv()
    purge = InternalRequest(Op.AUDIT_PURGE, apb.PurgeRequest(cutoff_ms=2000).SerializeToString())
    assert fsm.apply(6, 1, purge.encode()) == 2
    assert [r.time_ms for r in fsm.audit.records] == [3000, 2000, 5000]
    assert fsm.kv.hash_kv() == hash_before  # the key space is untouched
    # Replaying the same entries elsewhere gives the same trail, byte for byte.
    other = EtcdStateMachine()
    other.restore(fsm.snapshot(), 6)
    assert other.snapshot() == fsm.snapshot()
    assert other.audit.records == fsm.audit.records and other.audit.next_id == 6
