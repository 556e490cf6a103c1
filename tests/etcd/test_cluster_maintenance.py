"""The Cluster and Maintenance services through the real etcdctl, against Flagstaff and etcd.

One 3-member Flagstaff cluster serves the module: ``member list``, ``endpoint
status/health/hashkv --cluster``, ``move-leader``, ``compaction``, ``defrag``;
a learner is added, started with ``--initial-cluster-state existing`` from
``member add``'s own output, promoted and removed. The error texts of the
membership commands are compared with a real etcd's.
"""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from tests.cluster.harness import Cluster, Node, ProcessRegistry, free_port, wait_until
from tests.etcd.etcdctl import Result, etcdctl, ok

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def fs(flagstaff_cluster: Cluster) -> Cluster:
    """The cluster, once every member has published its client URLs (etcd's publish)."""
    wait_until(lambda: len(_published(flagstaff_cluster.endpoints)) == 3, 30, "3 published members")
    return flagstaff_cluster


def _members(endpoints: str) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = json.loads(ok(endpoints, "member", "list", "-w", "json"))["members"]
    return members


def _published(endpoints: str) -> list[dict[str, Any]]:
    return [m for m in _members(endpoints) if m.get("clientURLs")]


def _error(res: Result) -> str:
    """The ``Error: ...`` line etcdctl ends a failed command with."""
    assert res.returncode != 0, res.stdout
    return [line for line in res.stderr.splitlines() if line.startswith("Error:")][-1]


def _leader_and_ids(cluster: Cluster) -> tuple[Node, dict[str, int]]:
    """The leader node and ``{node name: member id}`` from ``endpoint status``."""
    statuses = json.loads(ok(cluster.endpoints, "endpoint", "status", "-w", "json"))
    by_endpoint = {s["Endpoint"]: s["Status"] for s in statuses}
    ids = {n.name: int(by_endpoint[n.endpoint]["header"]["member_id"]) for n in cluster.nodes}
    leader_id = by_endpoint[cluster.nodes[0].endpoint]["leader"]
    leader = next(n for n in cluster.nodes if ids[n.name] == leader_id)
    return leader, ids


def test_member_list_names_every_member_with_its_urls(fs: Cluster) -> None:
    out = json.loads(ok(fs.endpoints, "member", "list", "-w", "json"))
    by_name = {m["name"]: m for m in out["members"]}
    assert sorted(by_name) == ["n1", "n2", "n3"]
    for node in fs.nodes:
        m = by_name[node.name]
        assert m["peerURLs"] == [node.peer_url]
        assert m["clientURLs"] == [node.client_url]
        assert int(node.require_status()["id"], 16) == m["ID"]
        assert not m.get("isLearner", False)
    assert [m["ID"] for m in out["members"]] == sorted(m["ID"] for m in out["members"])
    assert out["header"]["cluster_id"] == int(fs.nodes[0].require_status()["cluster_id"], 16)
    table = ok(fs.endpoints, "member", "list")
    assert all(f"started, {n.name}, {n.peer_url}, {n.client_url}, false" in table for n in fs.nodes)


def test_endpoint_status_health_and_hashkv_across_the_cluster(fs: Cluster) -> None:
    for i in range(5):
        ok(fs.endpoints, "put", f"/cm/status/{i}", "v" * 100)
    one = fs.nodes[0].endpoint  # --cluster finds the others through MemberList's client URLs
    statuses = json.loads(ok(one, "endpoint", "status", "--cluster", "-w", "json"))
    assert sorted(s["Endpoint"] for s in statuses) == sorted(n.client_url for n in fs.nodes)
    leaders = {s["Status"]["leader"] for s in statuses}
    assert len(leaders) == 1
    assert sum(s["Status"]["header"]["member_id"] == s["Status"]["leader"] for s in statuses) == 1
    for s in statuses:
        st = s["Status"]
        assert st["version"] == "3.4.23"
        assert st["dbSize"] > 0 and st["dbSizeInUse"] == st["dbSize"]
        assert st["raftTerm"] >= 2 and st["raftIndex"] >= st["raftAppliedIndex"] > 0
        assert "errors" not in st and not st.get("isLearner", False)

    health = json.loads(ok(one, "endpoint", "health", "--cluster", "-w", "json"))
    assert len(health) == 3 and all(h["health"] for h in health)

    def equal_hashes() -> list[dict[str, Any]] | None:
        hashes = json.loads(ok(one, "endpoint", "hashkv", "--cluster", "-w", "json"))
        values = {(h["HashKV"]["hash"], h["HashKV"]["header"]["revision"]) for h in hashes}
        return hashes if len(hashes) == 3 and len(values) == 1 else None

    hashes = wait_until(equal_hashes, 10, "equal HashKV on every member")
    revision = hashes[0]["HashKV"]["header"]["revision"]
    assert hashes[0]["HashKV"]["compact_revision"] == -1
    # The hash at an older revision is the same everywhere too, and differs from the latest one.
    older = json.loads(ok(fs.endpoints, "endpoint", "hashkv", "--rev", str(revision - 1), "-w", "json"))
    assert len({h["HashKV"]["hash"] for h in older}) == 1
    assert older[0]["HashKV"]["hash"] != hashes[0]["HashKV"]["hash"]
    assert "future revision" in _error(etcdctl(fs.endpoints, "endpoint", "hashkv", "--rev", "999999"))


def test_move_leader_hands_leadership_to_the_target(fs: Cluster) -> None:
    leader, ids = _leader_and_ids(fs)
    target = next(n for n in fs.nodes if n is not leader)
    out = ok(fs.endpoints, "move-leader", f"{ids[target.name]:x}")
    assert out == f"Leadership transferred from {ids[leader.name]:x} to {ids[target.name]:x}\n"
    new_leader, _ = _leader_and_ids(fs)
    assert new_leader is target
    # To itself: nothing to do (etcd answers the same way).
    again = ok(fs.endpoints, "move-leader", f"{ids[target.name]:x}")
    assert again == f"Leadership transferred from {ids[target.name]:x} to {ids[target.name]:x}\n"
    assert _error(etcdctl(fs.endpoints, "move-leader", "1234")) == "Error: etcdserver: bad leader transferee"
    # Given only a follower, etcdctl itself finds no leader to ask.
    follower = next(n for n in fs.nodes if n is not target)
    res = etcdctl(follower.endpoint, "move-leader", f"{ids[leader.name]:x}")
    assert _error(res) == f"Error: no leader endpoint given at [{follower.endpoint}]"


def test_compaction_and_defrag(fs: Cluster) -> None:
    first = json.loads(ok(fs.endpoints, "put", "/cm/compact", "v1", "-w", "json"))["header"]["revision"]
    ok(fs.endpoints, "put", "/cm/compact", "v2")
    ok(fs.endpoints, "put", "/cm/compact", "v3")
    assert ok(fs.endpoints, "get", "/cm/compact", f"--rev={first}", "--print-value-only") == "v1\n"
    assert ok(fs.endpoints, "compaction", str(first + 1)) == f"compacted revision {first + 1}\n"
    compacted = "Error: etcdserver: mvcc: required revision has been compacted"
    assert _error(etcdctl(fs.endpoints, "get", "/cm/compact", f"--rev={first}")) == compacted
    assert _error(etcdctl(fs.endpoints, "compaction", str(first))) == compacted
    future = "Error: etcdserver: mvcc: required revision is a future revision"
    assert _error(etcdctl(fs.endpoints, "compaction", "99999999")) == future
    assert ok(fs.endpoints, "get", "/cm/compact", "--print-value-only") == "v3\n"
    hashes = json.loads(ok(fs.endpoints, "endpoint", "hashkv", "-w", "json"))
    assert {h["HashKV"]["compact_revision"] for h in hashes} == {first + 1}

    out = ok(fs.endpoints, "defrag")
    assert sorted(out.splitlines()) == sorted(
        f"Finished defragmenting etcd member[{n.endpoint}]" for n in fs.nodes
    )
    out = ok(fs.nodes[0].endpoint, "defrag", "--cluster")
    assert len(out.splitlines()) == 3
    assert ok(fs.endpoints, "alarm", "list") == ""


def test_learner_joins_is_promoted_and_removed(fs: Cluster, module_processes: ProcessRegistry) -> None:
    base = fs.nodes[0].data_dir.parent
    node = Node(
        name="n4", peer_port=free_port(), metrics_port=free_port(), data_dir=base / "n4",
        log_path=base / "n4.log", registry=module_processes,
    )
    out = ok(fs.endpoints, "member", "add", "n4", f"--peer-urls={node.peer_url}", "--learner")
    match = re.match(r"Member +([0-9a-f]+) added to cluster +([0-9a-f]+)\n", out)  # etcdctl pads with %16x
    assert match is not None, out
    new_id = int(match.group(1), 16)
    env = dict(re.findall(r'^(ETCD_\w+)="(.*)"$', out, re.MULTILINE))
    assert env["ETCD_NAME"] == "n4"
    assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == node.peer_url
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert sorted(env["ETCD_INITIAL_CLUSTER"].split(",")) == sorted(
        [f"{n.name}={n.peer_url}" for n in fs.nodes] + [f"n4={node.peer_url}"]
    )
    unstarted = next(m for m in _members(fs.endpoints) if m["ID"] == new_id)
    assert unstarted.get("isLearner") and "name" not in unstarted and "clientURLs" not in unstarted
    assert "unstarted" in ok(fs.endpoints, "member", "list")
    # Not started yet, so not in sync: etcd's refusal.
    assert _error(etcdctl(fs.endpoints, "member", "promote", f"{new_id:x}")) == (
        "Error: etcdserver: can only promote a learner member which is in sync with leader"
    )

    node.start(env["ETCD_INITIAL_CLUSTER"], state="existing")
    try:
        wait_until(
            lambda: any(m["ID"] == new_id and m.get("name") == "n4" for m in _published(fs.endpoints)),
            30, "the learner to publish its name and client URLs",
        )
        status = json.loads(ok(node.endpoint, "endpoint", "status", "-w", "json"))[0]["Status"]
        assert status["isLearner"] and status["header"]["member_id"] == new_id
        # A 3.4 learner serves Status only (etcdctl would retry this UNAVAILABLE for seconds).
        with grpc.insecure_channel(node.endpoint) as channel:
            member_list = channel.unary_unary(
                "/etcdserverpb.Cluster/MemberList",
                request_serializer=pb.MemberListRequest.SerializeToString,
                response_deserializer=pb.MemberListResponse.FromString,
            )
            with pytest.raises(grpc.RpcError) as refused:
                member_list(pb.MemberListRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == "etcdserver: rpc not supported for learner"
        # Writes and linearizable reads are refused too; a serializable read is served.
        for args in (["put", "/learner/k", "v"], ["get", "/learner/k"]):
            res = etcdctl(node.endpoint, *args)
            assert res.returncode != 0 and "rpc not supported for learner" in res.stderr
        served = etcdctl(node.endpoint, "get", "/learner/k", "--consistency=s")
        assert served.returncode == 0, served.stderr

        def promote() -> str | None:
            res = etcdctl(fs.endpoints, "member", "promote", f"{new_id:x}")
            return res.stdout if res.returncode == 0 else None

        # Promotion goes through whichever member etcdctl picked (followers forward to the leader).
        # etcdctl prints ids with %16x (space-padded): compare with runs of spaces collapsed.
        assert " ".join(wait_until(promote, 20, "the learner to catch up and be promoted").split()) == (
            f"Member {new_id:x} promoted in cluster {int(match.group(2), 16):x}"
        )
        promoted = next(m for m in _members(fs.endpoints) if m["ID"] == new_id)
        assert not promoted.get("isLearner", False)
        status = json.loads(ok(node.endpoint, "endpoint", "status", "-w", "json"))[0]["Status"]
        assert not status.get("isLearner", False)
        assert ok(node.endpoint, "put", "/cm/from-n4", "x") == "OK\n"

        removed = ok(fs.endpoints, "member", "remove", f"{new_id:x}")
        assert " ".join(removed.split()) == f"Member {new_id:x} removed from cluster {int(match.group(2), 16):x}"
        assert node.proc is not None
        assert node.proc.wait(timeout=20) == 0  # a removed member stops by itself
        assert sorted(m["name"] for m in _members(fs.endpoints)) == ["n1", "n2", "n3"]
        assert _error(etcdctl(fs.endpoints, "member", "remove", f"{new_id:x}")) == (
            "Error: etcdserver: member not found"
        )
    finally:
        if node.running:
            node.kill9()


def _membership_errors(endpoints: str, other_peer_url: str) -> list[str]:
    """A fixed sequence of refused membership commands; etcdctl's error line for each."""
    learner_url = f"http://127.0.0.1:{free_port()}"
    out = ok(endpoints, "member", "add", "l1", f"--peer-urls={learner_url}", "--learner")
    learner = out.split()[1]
    seen = [
        _error(etcdctl(endpoints, "member", "add", "l2", f"--peer-urls=http://127.0.0.1:{free_port()}", "--learner")),
        _error(etcdctl(endpoints, "member", "promote", learner)),
        _error(etcdctl(endpoints, "member", "update", learner, f"--peer-urls={other_peer_url}")),
        _error(etcdctl(endpoints, "member", "update", "1234", "--peer-urls=http://127.0.0.1:1")),
        _error(etcdctl(endpoints, "member", "promote", "1234")),
        _error(etcdctl(endpoints, "member", "remove", "1234")),
        _error(etcdctl(endpoints, "move-leader", "1234")),
    ]
    voter = json.loads(ok(endpoints, "member", "list", "-w", "json"))["members"]
    voter_id = next(m["ID"] for m in voter if not m.get("isLearner"))
    seen.append(_error(etcdctl(endpoints, "member", "promote", f"{voter_id:x}")))
    removed = ok(endpoints, "member", "remove", learner)
    seen.append(re.sub(r"Member +\S+ removed from cluster +\S+", "Member <id> removed", removed.strip()))
    seen.append(ok(endpoints, "alarm", "list"))
    return seen


def test_membership_errors_match_etcd(fs: Cluster, real_etcd: str) -> None:
    real_peer = json.loads(ok(real_etcd, "member", "list", "-w", "json"))["members"][0]["peerURLs"][0]
    ours = _membership_errors(fs.endpoints, fs.nodes[1].peer_url)
    theirs = _membership_errors(real_etcd, real_peer)
    assert ours == theirs
    assert ours[0] == "Error: etcdserver: too many learner members in cluster"


def test_member_add_refuses_bad_urls_and_duplicates(fs: Cluster) -> None:
    # etcdctl checks the URL itself; the server's own check answers raw gRPC clients.
    assert "URL scheme must be http" in _error(etcdctl(fs.endpoints, "member", "add", "x", "--peer-urls=notaurl"))
    res = etcdctl(fs.endpoints, "member", "add", "x", f"--peer-urls={fs.nodes[0].peer_url}")
    # etcd hashes the time into a new member's id, so it reports the URL; Flagstaff derives the
    # id from the URLs alone (a joining member must compute it), so it reports the id.
    assert _error(res) == "Error: etcdserver: member ID already exist"
