"""Leases across failures: a killed leader, checkpoints, and a full cluster restart (real processes).

One cluster (checkpoints every second, frequent snapshots) goes through the
whole story, driven by the real etcdctl: a lease kept alive through a
follower survives ``kill -9`` of the leader (the new leader promotes every
lease to a full TTL); a long lease resumes from its checkpointed remaining
TTL rather than its granted one; after every member is killed and started
again, leases are still there with their granted TTLs, and a lease nobody
keeps alive any more expires.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.cluster.harness import Cluster, wait_until
from tests.etcd.etcdctl import ok
from tests.etcd.test_lease import background, exists, grant_lease, stays

pytestmark = pytest.mark.timeout(180)


def _ttl(endpoint: str, lease: str) -> tuple[int, int]:
    """(remaining, granted) TTL as etcdctl reports them through ``endpoint``."""
    info = json.loads(ok(endpoint, "lease", "timetolive", lease, "-w", "json"))
    return int(info["ttl"]), int(info["granted-ttl"])


def test_leases_survive_leader_kill_resume_checkpoints_and_survive_restart(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        extra_args=["--experimental-lease-checkpoint-interval=1s", "--snapshot-count=8"]
    )
    leader = cluster.wait_for_leader(timeout=30)
    follower, other = (n for n in cluster.nodes if n is not leader)
    ep = follower.endpoint

    long_lease = grant_lease(ep, 30)
    kept = grant_lease(ep, 2)
    ok(ep, "put", "/fail/kept", "v", f"--lease={kept}")
    ok(ep, "put", "/fail/long", "v", f"--lease={long_lease}")

    with background(ep, "lease", "keep-alive", kept) as keeper:
        wait_until(lambda: len(keeper.lines) >= 1, 10, "the first keep-alive answer")
        # Checkpoints every second record the long lease's remaining TTL.
        wait_until(lambda: _ttl(leader.endpoint, long_lease)[0] <= 26, 15, "4 s of the long lease")

        leader.kill9()
        new = cluster.wait_for_leader(among=[follower, other], timeout=15)
        assert new is not leader
        # The new leader resumed the long lease from its last checkpoint (taken at most
        # ~1.5 s apart: <= 29 s left) plus one election timeout, not from its granted 30 s
        # (which gives 30 without checkpoints).
        remaining, granted = _ttl(ep, long_lease)
        assert granted == 30 and 15 <= remaining <= 29, remaining
        assert _ttl(other.endpoint, long_lease)[0] in (remaining, remaining - 1)
        # Kept alive through the follower across the failover: never expires.
        stays(lambda: exists(ep, "/fail/kept"), 4.0, "the kept-alive key after the leader died")
        assert all(line == f"lease {kept} keepalived with TTL(2)" for line in keeper.lines)

    # A full restart: every member killed, then started again on its data dir.
    for node in (follower, other):
        node.kill9()
    for node in cluster.nodes:
        node.start(cluster.initial_cluster)
    restarted = cluster.wait_for_leader(timeout=30)

    listed = ok(restarted.endpoint, "lease", "list")
    assert long_lease in listed
    remaining, granted = _ttl(ep, long_lease)
    assert granted == 30 and 5 <= remaining <= 28, remaining
    assert exists(ep, "/fail/long")
    # Nobody keeps the short lease alive any more: it expires, with its key.
    wait_until(lambda: not exists(ep, "/fail/kept"), 15, "the unkept lease to expire")
    assert kept not in ok(ep, "lease", "list")
    assert exists(restarted.endpoint, "/fail/long")
