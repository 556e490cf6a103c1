"""A member's ``/metrics``: the series a Prometheus scrape sees change as the cluster works.

Scraped over https from the TLS cluster of this package (the metrics listener
uses the client certificate, as etcd's does).
"""

from __future__ import annotations

import re
import uuid

from consensus.client import Client
from tests.cluster.harness import Cluster, wait_until
from tests.tls.pki import Pki
from tests.tls.tls_support import TlsNode

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def scrape(node: TlsNode) -> dict[str, float]:
    """``{series: value}`` of one scrape (series include their labels, as written)."""
    samples: dict[str, float] = {}
    for line in node.scrape().splitlines():
        m = _SAMPLE.match(line)
        if m:
            samples[m.group(1)] = float(m.group(2))
    return samples


def nodes(cluster: Cluster) -> list[TlsNode]:
    return [n for n in cluster.nodes if isinstance(n, TlsNode)]


def client_for(node: TlsNode, pki: Pki) -> Client:
    return Client([node.endpoint], ca_file=str(pki.ca), cert_file=str(pki.client.cert),
                  key_file=str(pki.client.key))


def test_raft_state_and_leader_series_agree_across_members(tls_cluster: Cluster) -> None:
    scrapes = [scrape(n) for n in nodes(tls_cluster)]
    leaders = [s['flagstaff_raft_state{state="leader"}'] for s in scrapes]
    assert sorted(leaders) == [0.0, 0.0, 1.0]
    followers = [s['flagstaff_raft_state{state="follower"}'] for s in scrapes]
    assert sorted(followers) == [0.0, 1.0, 1.0]
    named = {k for s in scrapes for k in s if k.startswith("flagstaff_raft_leader{")}
    assert len(named) == 1  # every member names the same leader
    for s in scrapes:
        assert s["etcd_server_has_leader"] == 1
        assert s["etcd_server_leader_changes_seen_total"] >= 1
        assert s["flagstaff_raft_term"] >= 1
        assert s["etcd_server_is_learner"] == 0


async def test_a_put_moves_proposals_wal_fsync_apply_and_store_series(
    tls_cluster: Cluster, pki: Pki
) -> None:
    node = nodes(tls_cluster)[0]
    before = scrape(node)
    async with client_for(node, pki) as client:
        await client.put(f"/metrics/{uuid.uuid4().hex}", "x" * 100)
    after = wait_until(
        lambda: (s := scrape(node))["etcd_server_proposals_applied_total"]
        > before["etcd_server_proposals_applied_total"] and s,
        10, "the put to be applied",
    )
    assert after["etcd_server_proposals_committed_total"] > before["etcd_server_proposals_committed_total"]
    assert after["etcd_disk_wal_fsync_duration_seconds_count"] > before["etcd_disk_wal_fsync_duration_seconds_count"]
    assert after["etcd_disk_wal_fsync_duration_seconds_sum"] > before["etcd_disk_wal_fsync_duration_seconds_sum"]
    assert after['etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"}'] == after["etcd_disk_wal_fsync_duration_seconds_count"]
    assert after["flagstaff_apply_duration_seconds_count"] > before["flagstaff_apply_duration_seconds_count"]
    assert after["etcd_debugging_mvcc_keys_total"] == before["etcd_debugging_mvcc_keys_total"] + 1
    assert after["etcd_mvcc_db_total_size_in_bytes"] > before["etcd_mvcc_db_total_size_in_bytes"]
    assert after["etcd_debugging_mvcc_current_revision"] > before["etcd_debugging_mvcc_current_revision"]


async def test_watchers_and_leases_show_up(tls_cluster: Cluster, pki: Pki) -> None:
    node = nodes(tls_cluster)[1]
    before = scrape(node)
    async with client_for(node, pki) as client:
        lease = await client.lease_grant(60)
        async with client.watch(f"/metrics-watch/{uuid.uuid4().hex}") as watch:
            await watch.wait_created(timeout=10)
            during = wait_until(
                lambda: (s := scrape(node))["etcd_debugging_mvcc_watcher_total"]
                > before["etcd_debugging_mvcc_watcher_total"] and s,
                10, "the watcher to be counted",
            )
            assert during["etcd_debugging_mvcc_watch_stream_total"] >= 1
            assert during["flagstaff_leases_active"] == before["flagstaff_leases_active"] + 1
        await client.lease_revoke(lease.ID)
    wait_until(
        lambda: scrape(node)["etcd_debugging_mvcc_watcher_total"]
        == before["etcd_debugging_mvcc_watcher_total"],
        10, "the closed watcher to be gone",
    )
    assert scrape(node)["flagstaff_leases_active"] == before["flagstaff_leases_active"]
