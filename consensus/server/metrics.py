"""A member's counters and gauges, and their Prometheus text exposition.

Names follow etcd's where etcd has the same metric (dashboards and alerts
written for etcd keep working); Flagstaff-only metrics start with
``flagstaff_``. Counters only ever increase for the life of the process.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class MemberMetrics:
    """The values the member updates as it runs (plain attributes: one event loop writes them)."""

    leader_changes_seen: int = 0
    proposals_failed: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    read_index_rounds: int = 0
    peer_messages_received: int = 0


@dataclass(frozen=True, slots=True)
class MetricsSample:
    """Everything one ``/metrics`` scrape shows, read at one moment."""

    member_id: int
    term: int
    commit: int
    applied: int
    has_leader: bool
    is_leader: bool
    proposals_pending: int
    counters: MemberMetrics


def render_prometheus(sample: MetricsSample) -> str:
    """The Prometheus text format (version 0.0.4) for ``sample``."""
    c = sample.counters
    rows: list[tuple[str, str, str, float | int]] = [
        ("etcd_server_has_leader", "gauge", "Whether a leader exists. 1 is existence, 0 is not.",
         int(sample.has_leader)),
        ("etcd_server_is_leader", "gauge", "Whether this member is the leader. 1 if is, 0 otherwise.",
         int(sample.is_leader)),
        ("etcd_server_leader_changes_seen_total", "counter", "The number of leader changes seen.",
         c.leader_changes_seen),
        ("etcd_server_proposals_committed_total", "gauge",
         "The total number of consensus proposals committed.", sample.commit),
        ("etcd_server_proposals_applied_total", "gauge",
         "The total number of consensus proposals applied.", sample.applied),
        ("etcd_server_proposals_pending", "gauge",
         "The current number of pending proposals to commit.", sample.proposals_pending),
        ("etcd_server_proposals_failed_total", "counter",
         "The total number of failed proposals seen.", c.proposals_failed),
        ("flagstaff_raft_term", "gauge", "The current Raft term of this member.", sample.term),
        ("flagstaff_snapshots_taken_total", "counter",
         "Snapshots this member took of its applied state.", c.snapshots_taken),
        ("flagstaff_snapshots_installed_total", "counter",
         "Snapshots received from a leader and installed.", c.snapshots_installed),
        ("flagstaff_read_index_rounds_total", "counter",
         "ReadIndex requests sent (each serves every read waiting on it).", c.read_index_rounds),
        ("flagstaff_peer_messages_received_total", "counter",
         "Raft messages received from peers.", c.peer_messages_received),
    ]
    lines: list[str] = []
    for name, kind, help_text, value in rows:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {value}")
    return "\n".join(lines) + "\n"
