"""The space quota's NOSPACE alarm and periodic auto compaction, through the real etcdctl.

One 3-member cluster with a tiny ``--quota-backend-bytes`` and a one-second
periodic ``--auto-compaction-retention``. The texts checked are the ones a
real etcd 3.4 prints in the same situation (alarm list, status errors,
refusals of put, txn and lease grant; deletes still pass).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.harness import Cluster, ProcessRegistry, wait_until
from tests.etcd.etcdctl import Result, etcdctl, ok

pytestmark = pytest.mark.timeout(180)

QUOTA = 60_000
NOSPACE = "etcdserver: mvcc: database space exceeded"


@pytest.fixture(scope="module")
def fs(tmp_path_factory: pytest.TempPathFactory, module_processes: ProcessRegistry) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("quota"), module_processes, 3,
        [f"--quota-backend-bytes={QUOTA}", "--auto-compaction-mode=periodic",
         "--auto-compaction-retention=1s"],
    )
    cluster.start()
    cluster.wait_for_leader(timeout=30)
    yield cluster
    module_processes.kill_all()
    for node in cluster.nodes:
        shutil.rmtree(node.data_dir, ignore_errors=True)


def _error(res: Result) -> str:
    assert res.returncode != 0, res.stdout
    return [line for line in res.stderr.splitlines() if line.startswith("Error:")][-1]


def _statuses(endpoints: str) -> list[dict[str, Any]]:
    return [s["Status"] for s in json.loads(ok(endpoints, "endpoint", "status", "-w", "json"))]


def test_nospace_alarm_refuses_writes_until_disarmed(fs: Cluster) -> None:
    ep = fs.endpoints
    value = "x" * 3000
    refused = None
    for i in range(QUOTA // 3000 + 5):
        res = etcdctl(ep, "put", f"/quota/k{i:03}", value)
        if res.returncode != 0:
            refused = res
            break
    assert refused is not None, "the quota never refused a put"
    assert _error(refused) == f"Error: {NOSPACE}"

    # The member that refused raised the alarm in its own name, through Raft: everyone has it.
    alarms = ok(ep, "alarm", "list")
    assert alarms.endswith(" alarm:NOSPACE \n") and alarms.startswith("memberID:")
    member_id = int(alarms.split()[0].split(":")[1])
    assert member_id in {s["header"]["member_id"] for s in _statuses(ep)}
    for st in _statuses(ep):
        assert st["errors"] == [f"memberID:{member_id} alarm:NOSPACE "]
        assert 0 < st["dbSize"] < QUOTA

    # While it is raised: puts, txns that put, and lease grants are refused; reads and deletes pass.
    assert _error(etcdctl(ep, "put", "/quota/tiny", "v")) == f"Error: {NOSPACE}"
    # etcdctl txn reads compares, then success ops, then failure ops, each ended by a blank line.
    txn_put = 'value("/quota/k000") != "nope"\n\nput /quota/tiny v\n\n\n'
    assert _error(etcdctl(ep, "txn", stdin=txn_put)) == f"Error: {NOSPACE}"
    assert _error(etcdctl(ep, "lease", "grant", "60")) == (
        f"Error: failed to grant lease ({NOSPACE})"
    )
    assert ok(ep, "get", "/quota/k000", "--print-value-only") == value + "\n"
    assert ok(ep, "txn", stdin="\ndel /quota/k000\n\n\n") == "SUCCESS\n\n1\n"
    assert int(ok(ep, "del", "/quota/", "--prefix")) > 0

    # Compaction frees the history at once (no defrag needed); then disarm lifts the alarm.
    revision = json.loads(ok(ep, "get", "/quota/none", "-w", "json"))["header"]["revision"]
    res = etcdctl(ep, "compaction", str(revision))
    assert res.returncode == 0 or "compacted" in res.stderr  # auto compaction may get there first
    # (An empty key space reports no dbSize at all: etcdctl omits zero fields.)
    wait_until(
        lambda: all(s.get("dbSize", 0) < QUOTA // 2 for s in _statuses(ep)), 10, "space to be freed"
    )
    assert ok(ep, "defrag").count("Finished defragmenting") == 3
    assert ok(ep, "alarm", "disarm") == f"memberID:{member_id} alarm:NOSPACE \n"
    assert ok(ep, "alarm", "list") == ""
    assert all("errors" not in s for s in _statuses(ep))
    assert ok(ep, "put", "/quota/after", "v") == "OK\n"
    assert ok(ep, "alarm", "disarm") == ""


def test_periodic_auto_compaction_keeps_one_second_of_history(fs: Cluster) -> None:
    ep = fs.endpoints
    first = json.loads(ok(ep, "put", "/auto/k", "v1", "-w", "json"))["header"]["revision"]
    ok(ep, "put", "/auto/k", "v2")
    last = json.loads(ok(ep, "put", "/auto/k", "v3", "-w", "json"))["header"]["revision"]

    def compacted_past() -> int | None:
        hashes = json.loads(ok(ep, "endpoint", "hashkv", "-w", "json"))
        revs = {h["HashKV"]["compact_revision"] for h in hashes}
        return revs.pop() if len(revs) == 1 and min(revs) >= last else None

    compact_rev = wait_until(compacted_past, 15, "the leader to compact past the writes")
    assert compact_rev >= last
    res = etcdctl(ep, "get", "/auto/k", f"--rev={first}")
    assert _error(res) == "Error: etcdserver: mvcc: required revision has been compacted"
    assert ok(ep, "get", "/auto/k", "--print-value-only") == "v3\n"
