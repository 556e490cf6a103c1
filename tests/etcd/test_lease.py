"""The Lease family through the real etcdctl, against a 3-member Flagstaff cluster and a real etcd.

Shapes are compared with etcd after normalising what legitimately differs
(lease ids, cluster/member ids, revisions, a remaining TTL that may have
ticked). Expiry tests poll with deadlines: a lease is shown to stay alive by
checking it over and over for longer than its TTL.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster, wait_until
from tests.etcd.etcdctl import ETCDCTL, etcdctl, ok

pytestmark = pytest.mark.timeout(120)

_ID = re.compile(r"\b[0-9a-f]{16}\b")


def _norm(text: str) -> str:
    """Lease ids, ticking remaining TTLs and etcd's unordered attached keys made comparable."""
    text = re.sub(r"remaining\(\d+s\)", "remaining(Ns)", _ID.sub("<ID>", text))
    return re.sub(
        r"attached keys\(\[(.*)\]\)", lambda m: f"attached keys([{' '.join(sorted(m[1].split()))}])", text
    )


def _last_err(res: Any) -> str:
    lines: list[str] = res.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def grant_lease(ep: str, ttl: int) -> str:
    out = ok(ep, "lease", "grant", str(ttl))
    m = re.fullmatch(r"lease ([0-9a-f]{16}) granted with TTL\((\d+)s\)\n", out)
    assert m, out
    return m.group(1)


def revision(ep: str) -> int:
    return int(json.loads(ok(ep, "get", "x-any-key", "-w", "json"))["header"]["revision"])


def exists(ep: str, key: str) -> bool:
    return ok(ep, "get", key, "--print-value-only") != ""


class Background:
    """A long-running etcdctl (keep-alive, watch) whose stdout lines are collected as they come."""

    def __init__(self, endpoints: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [ETCDCTL, f"--endpoints={endpoints}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env={**os.environ, "ETCDCTL_API": "3"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


@contextmanager
def background(endpoints: str, *args: str) -> Iterator[Background]:
    bg = Background(endpoints, *args)
    try:
        yield bg
    finally:
        bg.stop()


def stays(probe: Any, seconds: float, what: str) -> None:
    """Check ``probe()`` again and again for ``seconds``; fail at the first False."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert probe(), f"{what} stopped holding"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def fs(flagstaff_cluster: Cluster) -> str:
    return flagstaff_cluster.endpoints


def test_grant_timetolive_list_keepalive_revoke_match_etcd(fs: str, real_etcd: str) -> None:
    seen = []
    for ep in (fs, real_etcd):
        lease = grant_lease(ep, 60)
        ok(ep, "put", "/lease1/a", "1", f"--lease={lease}")
        ok(ep, "put", "/lease1/b", "2", f"--lease={lease}")
        grant_json = json.loads(ok(ep, "lease", "grant", "60", "-w", "json"))
        ttl = ok(ep, "lease", "timetolive", lease)
        ttl_keys = ok(ep, "lease", "timetolive", lease, "--keys")
        ttl_json = json.loads(ok(ep, "lease", "timetolive", lease, "--keys", "-w", "json"))
        unknown = ok(ep, "lease", "timetolive", "1234")
        unknown_json = json.loads(ok(ep, "lease", "timetolive", "1234", "-w", "json"))
        listed = ok(ep, "lease", "list")
        once = ok(ep, "lease", "keep-alive", "--once", lease)
        once_json = json.loads(ok(ep, "lease", "keep-alive", "--once", lease, "-w", "json"))
        once_unknown = etcdctl(ep, "lease", "keep-alive", "--once", "1234")
        revoked = ok(ep, "lease", "revoke", lease)
        again = etcdctl(ep, "lease", "revoke", lease)
        put_revoked = etcdctl(ep, "put", "/lease1/c", "3", f"--lease={lease}")
        gone = ok(ep, "get", "/lease1/", "--prefix")
        after = ok(ep, "lease", "timetolive", lease)

        assert lease in listed.splitlines()[1:]
        assert listed.splitlines()[0] == f"found {len(listed.splitlines()) - 1} leases"
        assert grant_json["TTL"] == 60 and grant_json["ID"] > 0
        assert 58 <= ttl_json["ttl"] <= 60 and ttl_json["granted-ttl"] == 60
        assert once_json["TTL"] == 60 and once_json["ID"] == int(lease, 16)
        assert sorted(base64.b64decode(k) for k in ttl_json["keys"]) == [b"/lease1/a", b"/lease1/b"]
        ok(ep, "lease", "revoke", format(grant_json["ID"], "x"))
        seen.append(
            (
                _norm(ttl), _norm(ttl_keys), sorted(grant_json), sorted(ttl_json),
                unknown, {k: v for k, v in unknown_json.items() if k in ("id", "ttl", "granted-ttl", "keys")},
                _norm(once), sorted(once_json),
                once_unknown.returncode, _last_err(once_unknown),
                _norm(revoked), again.returncode, _last_err(again),
                put_revoked.returncode, _last_err(put_revoked), gone, _norm(after),
            )
        )
    assert seen[0] == seen[1]
    assert seen[0][0] == "lease <ID> granted with TTL(60s), remaining(Ns)\n"
    assert seen[0][1].endswith("attached keys([/lease1/a /lease1/b])\n")
    assert seen[0][4] == "lease 0000000000001234 already expired\n"
    assert seen[0][12] == "Error: failed to revoke lease (etcdserver: requested lease not found)"


def test_grant_limits_and_chosen_ids_match_etcd(fs: str, real_etcd: str) -> None:
    seen = []
    for ep in (fs, real_etcd):
        minimum = ok(ep, "lease", "grant", "0")  # raised to the minimum TTL
        too_large = etcdctl(ep, "lease", "grant", "9000000001")
        with grpc.insecure_channel(ep.split(",")[0]) as channel:
            stub = pb_grpc.LeaseStub(channel)
            chosen = stub.LeaseGrant(pb.LeaseGrantRequest(ID=0x5EED, TTL=30), timeout=10)
            with pytest.raises(grpc.RpcError) as dup:
                stub.LeaseGrant(pb.LeaseGrantRequest(ID=0x5EED, TTL=30), timeout=10)
            kept = stub.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=0x5EED)]), timeout=10)
            first = next(iter(kept))
            stub.LeaseRevoke(pb.LeaseRevokeRequest(ID=0x5EED), timeout=10)
            with pytest.raises(grpc.RpcError) as missing:
                stub.LeaseRevoke(pb.LeaseRevokeRequest(ID=0x5EED), timeout=10)
        ok(ep, "lease", "revoke", minimum.split()[1])
        seen.append(
            (
                _norm(minimum), too_large.returncode, _last_err(too_large),
                (chosen.ID, chosen.TTL), (dup.value.code(), dup.value.details()),
                (first.ID, first.TTL), (missing.value.code(), missing.value.details()),
            )
        )
    assert seen[0] == seen[1]
    assert seen[0][2] == "Error: failed to grant lease (etcdserver: too large lease TTL)"
    assert seen[0][4] == (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")
    assert seen[0][6] == (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")


def test_every_member_reports_the_leaders_remaining_ttl(flagstaff_cluster: Cluster) -> None:
    leader = flagstaff_cluster.wait_for_leader()
    follower = next(n for n in flagstaff_cluster.nodes if n is not leader)
    lease = grant_lease(follower.endpoint, 30)  # proposed through a follower
    ok(follower.endpoint, "put", "/lease3/k", "v", f"--lease={lease}")
    for node in flagstaff_cluster.nodes:
        info = json.loads(ok(node.endpoint, "lease", "timetolive", lease, "--keys", "-w", "json"))
        assert 28 <= info["ttl"] <= 30 and info["granted-ttl"] == 30, node.name
        assert info["keys"] == [base64.b64encode(b"/lease3/k").decode()]
        assert lease in ok(node.endpoint, "lease", "list")
    ok(follower.endpoint, "lease", "revoke", lease)
    for node in flagstaff_cluster.nodes:
        assert ok(node.endpoint, "lease", "timetolive", lease) == f"lease {lease} already expired\n"


def test_expired_lease_is_revoked_once_and_watchers_see_the_deletes(flagstaff_cluster: Cluster) -> None:
    ep = flagstaff_cluster.endpoints
    lease = grant_lease(ep, 1)
    ok(ep, "put", "/lease4/a", "1", f"--lease={lease}")
    ok(ep, "put", "/lease4/b", "2", f"--lease={lease}")
    ok(ep, "put", "/lease4/plain", "3")
    before = revision(ep)
    with background(ep, "watch", "/lease4/", "--prefix", "-w", "json") as watch:
        wait_until(lambda: not exists(ep, "/lease4/a"), 10, "the lease to expire")
        revoked_at = revision(ep)
        assert revoked_at == before + 1  # both keys go in one revision
        assert not exists(ep, "/lease4/b") and exists(ep, "/lease4/plain")

        def deletes() -> list[dict[str, Any]] | None:
            events = [
                ev for line in watch.lines if line.startswith("{")
                for ev in json.loads(line).get("Events") or []
                if ev.get("type") == 1  # mvccpb.DELETE (etcdctl prints the enum's number)
            ]
            return events if len(events) >= 2 else None

        events = wait_until(deletes, 10, "the watcher to see two DELETE events")
        assert [base64.b64decode(ev["kv"]["key"]) for ev in events] == [b"/lease4/a", b"/lease4/b"]
        assert {ev["kv"]["mod_revision"] for ev in events} == {revoked_at}
    # Exactly once: no later revoke makes another revision (retries find nothing).
    stays(lambda: revision(ep) == revoked_at, 4.0, "the revision after the revoke")
    assert ok(ep, "lease", "timetolive", lease) == f"lease {lease} already expired\n"
    assert lease not in ok(ep, "lease", "list")


def test_keep_alive_through_a_follower_keeps_the_lease(flagstaff_cluster: Cluster) -> None:
    leader = flagstaff_cluster.wait_for_leader()
    follower = next(n for n in flagstaff_cluster.nodes if n is not leader)
    lease = grant_lease(follower.endpoint, 2)
    ok(follower.endpoint, "put", "/lease5/k", "v", f"--lease={lease}")
    with background(follower.endpoint, "lease", "keep-alive", lease) as keeper:
        wait_until(lambda: len(keeper.lines) >= 2, 10, "two keep-alive answers")
        stays(lambda: exists(follower.endpoint, "/lease5/k"), 4.0, "the kept-alive key")
        assert set(keeper.lines) == {f"lease {lease} keepalived with TTL(2)"}
    # Not kept alive any more: it expires after its TTL.
    wait_until(lambda: not exists(leader.endpoint, "/lease5/k"), 10, "the lease to expire")
    with background(follower.endpoint, "lease", "keep-alive", lease) as late:
        wait_until(lambda: late.lines or None, 10, "the keep-alive of a revoked lease to answer")
        assert late.lines[0] == f"lease {lease} expired or revoked."
