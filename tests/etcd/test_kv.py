"""The KV family through the real etcdctl: get/put/del/txn against Flagstaff, compared with etcd.

Each test runs the same etcdctl commands against a 3-member Flagstaff cluster
and a real etcd, on keys under a prefix of its own, and compares what a user
sees (IDs and revisions normalised where they legitimately differ).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.harness import Cluster
from tests.etcd.etcdctl import etcdctl, ok


@pytest.fixture(scope="module")
def fs(flagstaff_cluster: Cluster) -> str:
    return flagstaff_cluster.endpoints


def _kvs(out: str) -> list[dict[str, Any]]:
    kvs: list[dict[str, Any]] = json.loads(out).get("kvs", [])
    return kvs


def _relative(kvs: list[dict[str, Any]], base: int) -> list[tuple[Any, ...]]:
    """KVs with revisions made relative to ``base`` (the two stores start at different revisions)."""
    return [
        (kv["key"], kv.get("value"), kv["create_revision"] - base, kv["mod_revision"] - base,
         kv["version"], kv.get("lease", 0))
        for kv in kvs
    ]


def _revision(endpoints: str) -> int:
    return int(json.loads(ok(endpoints, "get", "x-any-key", "-w", "json"))["header"]["revision"])


def test_put_get_delete_round_trip(fs: str, real_etcd: str) -> None:
    for ep in (fs, real_etcd):
        assert ok(ep, "put", "/kv1/a", "1") == "OK\n"
        assert ok(ep, "put", "/kv1/b", "2") == "OK\n"
        assert ok(ep, "get", "/kv1/a") == "/kv1/a\n1\n"
        assert ok(ep, "get", "/kv1/", "--prefix") == "/kv1/a\n1\n/kv1/b\n2\n"
        assert ok(ep, "get", "/kv1/", "--prefix", "--keys-only") == "/kv1/a\n\n/kv1/b\n\n"
        assert ok(ep, "del", "/kv1/a") == "1\n"
        assert ok(ep, "del", "/kv1/a") == "0\n"
        assert ok(ep, "get", "/kv1/a") == ""


def test_revisions_versions_and_history_match_etcd(fs: str, real_etcd: str) -> None:
    seen = []
    for ep in (fs, real_etcd):
        base = _revision(ep)
        ok(ep, "put", "/kv2/k", "v1")
        ok(ep, "put", "/kv2/k", "v2")
        ok(ep, "put", "/kv2/other", "o")
        ok(ep, "del", "/kv2/k")
        ok(ep, "put", "/kv2/k", "v3")
        now = _relative(_kvs(ok(ep, "get", "/kv2/", "--prefix", "-w", "json")), base)
        old = _relative(_kvs(ok(ep, "get", "/kv2/k", f"--rev={base + 2}", "-w", "json")), base)
        seen.append((now, old))
    assert seen[0] == seen[1]


def test_range_options_match_etcd(fs: str, real_etcd: str) -> None:
    outputs = []
    for ep in (fs, real_etcd):
        for k, v in [("c", "3"), ("a", "1"), ("b", "2"), ("d", "0")]:
            ok(ep, "put", f"/kv3/{k}", v)
        ok(ep, "put", "/kv3/a", "11")
        runs = [
            ["get", "/kv3/", "--prefix", "--limit=2"],
            ["get", "/kv3/", "--prefix", "--sort-by=VALUE", "--order=DESCEND"],
            ["get", "/kv3/", "--prefix", "--sort-by=VERSION", "--order=ASCEND"],
            ["get", "/kv3/b", "--from-key", "--limit=2"],
            ["get", "/kv3/a", "/kv3/c"],
            ["get", "/kv3/", "--prefix", "--print-value-only"],
        ]
        outputs.append([ok(ep, *r) for r in runs])
        limited = json.loads(ok(ep, "get", "/kv3/", "--prefix", "--limit=2", "-w", "json"))
        assert limited["more"] is True and limited["count"] == 4
    assert outputs[0] == outputs[1]


def test_put_prev_kv_ignore_value_and_errors_match_etcd(fs: str, real_etcd: str) -> None:
    outputs = []
    for ep in (fs, real_etcd):
        ok(ep, "put", "/kv4/k", "first")
        prev = ok(ep, "put", "/kv4/k", "second", "--prev-kv")
        ignore = ok(ep, "put", "/kv4/k", "--ignore-value")
        after = ok(ep, "get", "/kv4/k")
        missing = etcdctl(ep, "put", "/kv4/missing", "--ignore-value")
        no_lease = etcdctl(ep, "put", "/kv4/k", "v", "--lease=1234abcd")
        empty = etcdctl(ep, "get", "")
        outputs.append(
            (prev, ignore, after, missing.returncode, missing.stderr.strip().splitlines()[-1:],
             no_lease.returncode, no_lease.stderr.strip().splitlines()[-1:], empty.returncode)
        )
    assert outputs[0] == outputs[1]
    assert "key not found" in outputs[0][4][0]
    assert "requested lease not found" in outputs[0][6][0]


def test_delete_prefix_and_prev_kv_match_etcd(fs: str, real_etcd: str) -> None:
    outputs = []
    for ep in (fs, real_etcd):
        for k in ("x", "y", "z"):
            ok(ep, "put", f"/kv5/{k}", k.upper())
        outputs.append(
            (ok(ep, "del", "/kv5/y", "--prev-kv"), ok(ep, "del", "/kv5/", "--prefix"),
             ok(ep, "get", "/kv5/", "--prefix"))
        )
    assert outputs[0] == outputs[1] == ("1\n/kv5/y\nY\n", "2\n", "")


def test_txn_interactive_compare_and_swap_matches_etcd(fs: str, real_etcd: str) -> None:
    outputs = []
    for ep in (fs, real_etcd):
        ok(ep, "put", "/kv6/lock", "free")
        swap = 'value("/kv6/lock") = "free"\n\nput /kv6/lock taken\nget /kv6/lock\n\nget /kv6/lock\n\n'
        first = ok(ep, "txn", stdin=swap)
        second = ok(ep, "txn", stdin=swap)
        version = 'version("/kv6/lock") > "1"\nmod("/kv6/nothing") = "0"\n\ndel /kv6/lock\n\n\n'
        third = ok(ep, "txn", stdin=version)
        outputs.append((first, second, third, ok(ep, "get", "/kv6/lock")))
    assert outputs[0] == outputs[1]
    assert outputs[0][0].startswith("SUCCESS")
    assert outputs[0][1].startswith("FAILURE")


def test_txn_limits_and_duplicate_keys_give_etcds_errors(fs: str, real_etcd: str) -> None:
    outputs = []
    for ep in (fs, real_etcd):
        dup = "\n\nput /kv7/a 1\nput /kv7/a 2\n\n\n"
        res = etcdctl(ep, "txn", stdin=dup)
        many = "\n\n" + "".join(f"put /kv7/k{i} v\n" for i in range(129)) + "\n\n"
        res2 = etcdctl(ep, "txn", stdin=many)
        outputs.append((res.returncode, res.stderr.strip().splitlines()[-1:],
                        res2.returncode, res2.stderr.strip().splitlines()[-1:]))
    assert outputs[0] == outputs[1]
    assert "duplicate key given in txn request" in outputs[0][1][0]
    assert "too many operations in txn request" in outputs[0][3][0]


def test_compaction_and_compacted_reads_match_etcd(fs: str, real_etcd: str) -> None:
    outputs = []
    for ep in (fs, real_etcd):
        ok(ep, "put", "/kv8/k", "1")
        ok(ep, "put", "/kv8/k", "2")
        rev = _revision(ep)
        out = ok(ep, "compaction", str(rev - 1))
        old = etcdctl(ep, "get", "/kv8/k", f"--rev={rev - 2}")
        future = etcdctl(ep, "get", "/kv8/k", f"--rev={rev + 100}")
        again = etcdctl(ep, "compaction", str(rev - 1))
        outputs.append(
            (out.replace(str(rev - 1), "R"), old.returncode, old.stderr.strip().splitlines()[-1:],
             future.returncode, future.stderr.strip().splitlines()[-1:], again.returncode,
             ok(ep, "get", "/kv8/k"))
        )
    assert outputs[0] == outputs[1]
    assert "required revision has been compacted" in outputs[0][2][0]
    assert "required revision is a future revision" in outputs[0][4][0]


def test_reads_from_every_member_see_acknowledged_writes(flagstaff_cluster: Cluster) -> None:
    for i, node in enumerate(flagstaff_cluster.nodes):
        ok(node.endpoint, "put", "/kv9/k", f"v{i}")
        for other in flagstaff_cluster.nodes:
            # Linearizable by default: every member answers with the write just acknowledged.
            assert ok(other.endpoint, "get", "/kv9/k", "--print-value-only") == f"v{i}\n"
    serial = ok(flagstaff_cluster.nodes[0].endpoint, "get", "/kv9/k", "--consistency=s")
    assert serial.splitlines()[0] == "/kv9/k"


def test_oversize_request_is_refused_with_etcds_error(fs: str) -> None:
    big = "x" * (2 * 1024 * 1024)
    res = etcdctl(fs, "put", "/kv10/big", stdin=big)  # no value argument: etcdctl reads stdin
    assert res.returncode != 0
    assert "request is too large" in res.stderr or "larger than max" in res.stderr
    assert ok(fs, "get", "/kv10/big") == ""
