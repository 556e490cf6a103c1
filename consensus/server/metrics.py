"""A member's counters and gauges, and their Prometheus text exposition.

Names follow etcd's where etcd has the same metric (dashboards and alerts
written for etcd keep working); Flagstaff-only metrics start with
``flagstaff_``. Counters only ever increase for the life of the process.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

WAL_FSYNC_BUCKETS = tuple(0.001 * 2**i for i in range(14))
"""etcd's buckets for ``etcd_disk_wal_fsync_duration_seconds``: 1 ms to 8.192 s, doubling."""
APPLY_BUCKETS = tuple(0.0001 * 2**i for i in range(16))
"""Apply-duration buckets: 100 µs to 3.3 s, doubling."""


class Histogram:
    """A Prometheus histogram: cumulative bucket counts, a sum and a count.

    ``observe`` may be called from any thread (the WAL's fsync runs on the
    group-commit thread); a scrape reads a consistent copy under the lock.
    """

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def render(self, name: str, help_text: str) -> list[str]:
        """The exposition lines of this histogram as ``name``."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, counts, strict=False):
            running += n
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        running += counts[-1]
        lines.append(f'{name}_bucket{{le="+Inf"}} {running}')
        lines.append(f"{name}_sum {total!r}")
        lines.append(f"{name}_count {running}")
        return lines


@dataclass(slots=True)
class MemberMetrics:
    """The values the member updates as it runs (plain attributes: one event loop writes them)."""

    leader_changes_seen: int = 0
    proposals_failed: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    loop_stalls: int = 0
    read_index_rounds: int = 0
    peer_messages_received: int = 0
    wal_fsync: Histogram = field(default_factory=lambda: Histogram(WAL_FSYNC_BUCKETS))
    """Seconds each WAL fsync took (observed on the group-commit thread)."""
    apply: Histogram = field(default_factory=lambda: Histogram(APPLY_BUCKETS))
    """Seconds each batch of committed entries (one Raft Ready) took to apply."""


@dataclass(frozen=True, slots=True)
class StoreGauges:
    """The replicated state machine's size and the watchers on it, read at scrape time."""

    keys: int
    db_size_bytes: int
    leases: int
    watchers: int
    watch_streams: int
    revision: int


def render_store(g: StoreGauges) -> str:
    """Prometheus text for ``g`` (etcd's names where etcd has the metric)."""
    rows: list[tuple[str, str, str, int]] = [
        ("etcd_mvcc_db_total_size_in_bytes", "gauge",
         "Total size of the underlying database physically allocated in bytes.", g.db_size_bytes),
        ("etcd_debugging_mvcc_keys_total", "gauge", "Total number of keys.", g.keys),
        ("etcd_debugging_mvcc_watcher_total", "gauge", "Total number of watchers.", g.watchers),
        ("etcd_debugging_mvcc_watch_stream_total", "gauge",
         "Total number of watch streams.", g.watch_streams),
        ("etcd_debugging_mvcc_current_revision", "gauge",
         "The current revision of store.", g.revision),
        ("flagstaff_leases_active", "gauge", "Leases currently granted and not expired.", g.leases),
    ]
    lines: list[str] = []
    for name, kind, help_text, value in rows:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"


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
    raft_state: str = "follower"
    """``follower``, ``pre_candidate``, ``candidate`` or ``leader``."""
    leader: int = 0
    is_learner: bool = False


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
        ("flagstaff_event_loop_stalls_total", "counter",
         "Ticks that ran more than 200 ms late (nothing else ran on the event loop meanwhile).",
         c.loop_stalls),
        ("flagstaff_read_index_rounds_total", "counter",
         "ReadIndex requests sent (each serves every read waiting on it).", c.read_index_rounds),
        ("flagstaff_peer_messages_received_total", "counter",
         "Raft messages received from peers.", c.peer_messages_received),
    ]
    rows.append(("etcd_server_is_learner", "gauge",
                 "Whether this member is a learner. 1 if is, 0 otherwise.", int(sample.is_learner)))
    lines: list[str] = []
    for name, kind, help_text, value in rows:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {value}")
    lines.append("# HELP flagstaff_raft_state The Raft state of this member (1 for the current one).")
    lines.append("# TYPE flagstaff_raft_state gauge")
    for state in ("follower", "pre_candidate", "candidate", "leader"):
        lines.append(f'flagstaff_raft_state{{state="{state}"}} {int(sample.raft_state == state)}')
    lines.append("# HELP flagstaff_raft_leader The leader this member knows of (hex id label; "
                 "no series while there is none).")
    lines.append("# TYPE flagstaff_raft_leader gauge")
    if sample.leader:
        lines.append(f'flagstaff_raft_leader{{leader="{sample.leader:x}"}} 1')
    lines += c.wal_fsync.render(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
    )
    lines += c.apply.render(
        "flagstaff_apply_duration_seconds",
        "The latency distributions of applying one batch of committed entries.",
    )
    return "\n".join(lines) + "\n"
