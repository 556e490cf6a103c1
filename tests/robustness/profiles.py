"""The scenarios the CI profile runs, and the seeded generator of the long sweep's scenarios.

A sweep scenario is a pure function of its seed (:func:`sweep_scenario`):
cluster size, traffic mix knobs and the fault schedule are drawn from
``random.Random(seed)``, so ``--seed N`` reproduces a run's setup exactly.
"""

from __future__ import annotations

import random
from typing import Any

from consensus.server.failpoints import SITES
from tests.robustness.faults import CORRUPTION_MODES, FaultSpec
from tests.robustness.scenario import Scenario

TMPFS_MB = 256
"""A tmpfs data dir for the full-disk fault: room for two 64 MiB preallocated WAL segments plus the
snapshots, which carry the audit trail (with the before/after of every ~32 KiB put) and so grow
through a run; the fault fills whatever is left, so the size only has to leave a normal run room."""


def ci_kills_and_partitions(seed: int = 101) -> Scenario:
    """3 members: kill the leader, partition the leader, pause a follower, peer latency and loss."""
    return Scenario(
        name="ci-kills-partitions", seed=seed, size=3, duration=18,
        schedule=[
            FaultSpec("kill", at=2, target="leader", hold=1),
            FaultSpec("partition", at=6, target="leader", hold=2.5),
            FaultSpec("pause", at=10, target="follower", hold=1.5),
            FaultSpec("latency", at=13, target="all", hold=2, params={"delay_ms": 60, "jitter_ms": 40}),
            FaultSpec("loss", at=15.5, target="all", hold=1.5, params={"loss": 0.15}),
        ],
    )


def ci_storage_and_membership(seed: int = 202) -> Scenario:
    """5 members: crash at a failpoint, corrupt a WAL tail, fill a disk, crash everyone, replace one."""
    return Scenario(
        name="ci-storage-membership", seed=seed, size=5, duration=24,
        tmpfs_mb={"m5": TMPFS_MB},
        member_args=[
            "--snapshot-count", "100",
            "--experimental-snapshot-catchup-entries", "50",
            "--experimental-watch-progress-notify-interval", "2s",
        ],
        schedule=[
            FaultSpec("failpoint", at=2, target="follower", hold=4, params={"site": "after-apply", "nth": 25}),
            FaultSpec("corrupt_wal", at=7, target="follower", hold=1, params={"mode": "torn"}),
            FaultSpec("disk_full", at=10, target="m5", hold=2, params={"wait_enospc": 10}),
            FaultSpec("kill", at=15, target="all", hold=1),
            FaultSpec("replace", at=20, target="follower", hold=0.5),
        ],
    )


def ci_injected_bug(seed: int = 303) -> Scenario:
    """Every member answers linearizable reads from local state when a follower; a lagging follower."""
    bug = {f"m{i}": {"FLAGSTAFF_TEST_BUG": "stale-follower-reads"} for i in range(1, 4)}
    return Scenario(
        name="ci-injected-stale-reads", seed=seed, size=3, duration=10, member_env=bug,
        schedule=[
            FaultSpec("latency", at=1, target="follower", hold=6, params={"delay_ms": 150, "jitter_ms": 50}),
        ],
    )


def ci_etcd(seed: int = 404) -> Scenario:
    """The real etcd under kills and a pause: the checkers must find nothing on a known-good system."""
    return Scenario(
        name="ci-etcd-known-good", target="etcd", seed=seed, size=3, duration=12,
        # etcd 3.4.23 answers RequestProgress for a watcher still catching up before its events
        # (etcd-io/etcd#15220, fixed in 3.4.24): the watch checks catch it, so do not ask.
        traffic={"request_progress": False},
        schedule=[
            FaultSpec("kill", at=2, target="leader", hold=1),
            FaultSpec("kill", at=5, target="all", hold=1),
            FaultSpec("pause", at=9, target="follower", hold=1.5),
        ],
    )


def random_fault(rng: random.Random, size: int, at: float, tmpfs_member: str | None) -> FaultSpec:
    """One fault drawn from the whole menu, with random parameters."""
    kinds = ["kill", "kill", "pause", "partition", "partition", "latency", "loss", "replace",
             "corrupt_wal", "failpoint", "failpoint", "combo"]
    if tmpfs_member:
        kinds.append("disk_full")
    kind = rng.choice(kinds)
    target = rng.choice(["leader", "follower"])
    if kind == "kill":
        return FaultSpec("kill", at, rng.choice(["leader", "follower", "follower", "all"]), rng.uniform(0.2, 2.5))
    if kind == "pause":
        return FaultSpec("pause", at, target, rng.uniform(0.5, 3))
    if kind == "partition":
        return FaultSpec("partition", at, target, rng.uniform(1, 4), {"one_way": rng.random() < 0.25})
    if kind == "latency":
        return FaultSpec("latency", at, rng.choice(["all", target]), rng.uniform(1, 4),
                         {"delay_ms": rng.choice([20, 50, 100, 200]), "jitter_ms": rng.choice([0, 20, 80])})
    if kind == "loss":
        return FaultSpec("loss", at, rng.choice(["all", target]), rng.uniform(1, 4),
                         {"loss": rng.choice([0.05, 0.1, 0.3])})
    if kind == "replace":
        return FaultSpec("replace", at, "follower", rng.uniform(0, 1.5))
    if kind == "corrupt_wal":
        return FaultSpec("corrupt_wal", at, "follower", rng.uniform(0.2, 2),
                         {"mode": rng.choice(CORRUPTION_MODES), "bytes": rng.randint(1, 40)})
    if kind == "failpoint":
        site = rng.choice(sorted(SITES))
        rare = "snapshot" in site or "compact" in site  # hit every few seconds, not per entry
        params: dict[str, Any] = {"site": site, "nth": rng.randint(1, 2) if rare else rng.randint(1, 60)}
        if site == "snapshot-install-saved":
            params["down"] = 3.0  # long enough to fall behind the leader's log: it must send a snapshot
        return FaultSpec("failpoint", at, target, 6 if rare else 4, params)
    if kind == "combo":
        degrade = random_fault(rng, size, 0.0, None)
        while degrade.fault not in ("latency", "loss", "partition", "pause"):
            degrade = random_fault(rng, size, 0.0, None)
        crash = FaultSpec("kill", rng.uniform(0.2, 1.0), rng.choice(["leader", "follower"]), rng.uniform(0.2, 1.5))
        return FaultSpec("combo", at, "all", max(degrade.hold, crash.at + crash.hold),
                         {"faults": [degrade.to_json(), crash.to_json()]})
    assert tmpfs_member is not None
    return FaultSpec("disk_full", at, tmpfs_member, rng.uniform(1, 4))


def sweep_scenario(seed: int, duration: float = 30.0) -> Scenario:
    """A random scenario for the long sweep, determined by ``seed``."""
    rng = random.Random(seed)
    size = rng.choice([3, 3, 5])
    tmpfs_member = f"m{size}" if rng.random() < 0.3 else None
    schedule: list[FaultSpec] = []
    at = rng.uniform(1, 3)
    while at < duration - 4:
        fault = random_fault(rng, size, at, tmpfs_member)
        schedule.append(fault)
        at += fault.hold + rng.uniform(2, 6)
    traffic = {
        "clients": rng.choice([3, 4, 6]),
        "keys": rng.choice([3, 6, 10]),
        "pinned_clients": rng.choice([0, 1, 2]),
        "kept_alive_ttl": rng.choice([3, 5, 10]),
    }
    snapshot_count = rng.choice(["100", "300", "1000"])
    if tmpfs_member:
        snapshot_count = "100"  # snapshots are what a full disk refuses first (the WAL is preallocated)
    return Scenario(
        name=f"sweep-{size}m", seed=seed, size=size, duration=duration, schedule=schedule, traffic=traffic,
        tmpfs_mb={tmpfs_member: TMPFS_MB} if tmpfs_member else {},
        member_args=[
            "--snapshot-count", snapshot_count,
            "--experimental-snapshot-catchup-entries", str(int(snapshot_count) // 3),
            "--experimental-watch-progress-notify-interval", "2s",
        ],
    )
