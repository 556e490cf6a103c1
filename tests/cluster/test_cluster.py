"""Three real `flagstaff node` processes on loopback: election, replication, failures, restarts."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from .harness import Cluster, http, wait_until

pytestmark = pytest.mark.timeout(120)


def test_three_members_elect_one_leader_and_replicate(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster()
    leader = cluster.wait_for_leader()
    followers = [n for n in cluster.nodes if n is not leader]
    # Proposals through followers are forwarded to the leader by Raft.
    last = 0
    for i in range(10):
        last = cluster.propose(f"payload-{i}".encode(), via=cluster.nodes[i % 3])
    state = cluster.wait_converged(last)
    assert state["revision"] == 1 + 10  # one revision per proposal (a Put)

    statuses = [n.status() for n in cluster.nodes]
    assert all(s is not None for s in statuses)
    assert len({s["cluster_id"] for s in statuses if s}) == 1
    assert {s["leader"] for s in statuses if s} == {leader.require_status()["id"]}
    assert len(cluster.nodes[0].require_status()["members"]) == 3
    wait_until(
        lambda: len({n.require_status()["commit"] for n in cluster.nodes}) == 1,
        10, "commit indexes to converge",
    )
    # A linearizable read through a follower returns an index it has applied.
    code, body = http("POST", f"{followers[0].metrics_url}/debug/read-index")
    assert code == 200 and body["index"] >= last
    assert leader.metric("etcd_server_is_leader") == 1
    assert followers[0].metric("etcd_server_is_leader") == 0
    code, body = http("GET", f"{followers[0].metrics_url}/health")
    assert (code, body) == (200, {"health": "true", "reason": ""})


def test_killed_leader_is_replaced_and_catches_up_after_restart(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    old = cluster.wait_for_leader()
    for i in range(5):
        cluster.propose(f"before-{i}".encode(), via=old)
    old.kill9()

    survivors = cluster.live()
    new = cluster.wait_for_leader(among=survivors)
    assert new is not old
    last = 0
    for i in range(5):
        last = cluster.propose(f"after-{i}".encode(), via=survivors[i % 2])
    cluster.wait_converged(last, nodes=survivors)

    old.start(cluster.initial_cluster)
    state = cluster.wait_converged(last, nodes=cluster.nodes)
    assert state["revision"] == 1 + 10  # one revision per proposal (a Put)
    cluster.wait_for_leader()


def test_member_restarted_after_compaction_catches_up_by_snapshot(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        extra_args=["--snapshot-count", "10", "--experimental-snapshot-catchup-entries", "2"]
    )
    leader = cluster.wait_for_leader()
    lagging = next(n for n in cluster.nodes if n is not leader)
    cluster.propose(b"first", via=leader)
    lagging.kill9()

    last = 0
    for i in range(30):
        last = cluster.propose(f"while-down-{i}".encode(), via=leader)
    leader_status = leader.status()
    assert leader_status is not None and leader_status["snapshot_index"] >= 20

    lagging.start(cluster.initial_cluster)
    state = cluster.wait_converged(last, nodes=cluster.nodes)
    assert state["revision"] == 1 + 31
    installed = wait_until(
        lambda: lagging.metric("flagstaff_snapshots_installed_total"), 5, "snapshot metric"
    )
    assert installed >= 1
    # It keeps replicating normally afterwards.
    last = cluster.propose(b"after-snapshot", via=lagging)
    cluster.wait_converged(last, nodes=cluster.nodes)


def test_sigterm_leader_hands_over_leadership_and_exits_zero(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.wait_for_leader()
    last = cluster.propose(b"x", via=leader)
    cluster.wait_converged(last)

    assert leader.terminate() == 0
    assert "leadership transferred to" in leader.log_tail(200)
    survivors = cluster.live()
    new = cluster.wait_for_leader(among=survivors, timeout=5)
    assert new is not leader
    last = cluster.propose(b"y", via=survivors[0])
    cluster.wait_converged(last, nodes=survivors)


def test_learner_joins_existing_cluster_is_promoted_and_a_member_is_removed(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.wait_for_leader()
    last = cluster.propose(b"before-join", via=leader)

    joiner = cluster.add_node_spec("n4")
    code, added = http(
        "POST", f"{leader.metrics_url}/debug/members/add",
        json.dumps({"name": "n4", "peer_urls": [joiner.peer_url], "is_learner": True}).encode(),
    )
    assert code == 200, added
    joiner.start(cluster.initial_cluster + f",n4={joiner.peer_url}", state="existing")
    cluster.wait_converged(last, nodes=cluster.nodes)
    joined = joiner.status()
    assert joined is not None and joined["id"] == added["id"] and joined["is_learner"]

    def promoted() -> bool | None:
        code, body = http("POST", f"{leader.metrics_url}/debug/members/promote?id={added['id']}")
        if code == 200:
            return True
        # Refused only until the learner has caught up with the leader's log.
        assert "which is in sync with leader" in body["error"], body
        return None

    wait_until(promoted, 10, "the learner to be promoted")
    wait_until(lambda: joiner.require_status()["is_learner"] is False, 10, "n4 to see itself as a voter")

    removed = next(n for n in cluster.nodes if n is not leader and n is not joiner)
    removed_id = removed.require_status()["id"]
    code, body = http("POST", f"{leader.metrics_url}/debug/members/remove?id={removed_id}")
    assert code == 200, body
    assert removed.proc is not None
    assert removed.proc.wait(timeout=15) == 0  # a removed member stops by itself
    remaining = cluster.live()
    assert len(remaining) == 3
    cluster.wait_for_leader(among=remaining)
    last = cluster.propose(b"after-remove", via=joiner)
    cluster.wait_converged(last, nodes=remaining)
    members = {m["name"] for m in joiner.require_status()["members"]}
    assert members == {n.name for n in remaining}


def test_member_added_after_the_log_was_compacted_catches_up_by_snapshot(
    make_cluster: Callable[..., Cluster],
) -> None:
    # The leader has snapshotted and compacted its log before the new member
    # exists: the member can only catch up by a snapshot, and it refuses one
    # that does not list it -- so the snapshot it gets must be newer than its
    # addition (found by the simulator; a stall without the fix).
    cluster = make_cluster(
        extra_args=["--snapshot-count", "10", "--experimental-snapshot-catchup-entries", "2"]
    )
    leader = cluster.wait_for_leader()
    for i in range(25):
        last = cluster.propose(f"before-join-{i}".encode(), via=leader)
    cluster.wait_converged(last)

    joiner = cluster.add_node_spec("n4")
    code, added = http(
        "POST", f"{leader.metrics_url}/debug/members/add",
        json.dumps({"name": "n4", "peer_urls": [joiner.peer_url], "is_learner": True}).encode(),
    )
    assert code == 200, added
    joiner.start(cluster.initial_cluster + f",n4={joiner.peer_url}", state="existing")
    cluster.wait_converged(last, nodes=cluster.nodes)
    last = cluster.propose(b"after-join", via=leader)
    state = cluster.wait_converged(last, nodes=cluster.nodes)
    assert state["revision"] == 1 + 26
