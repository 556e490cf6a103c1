"""A member's configuration: every ``flagstaff node`` flag, validated, in one value object.

Flag names, defaults and units follow etcd (``--heartbeat-interval`` and
``--election-timeout`` in milliseconds, ``--snapshot-count`` in applied
entries). Settings for the next milestone (quota, auto-compaction, request
size) are parsed and kept here so that scripts written for etcd work today.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.server.cluster import InitialCluster

CLUSTER_STATE_NEW = "new"
CLUSTER_STATE_EXISTING = "existing"

DEFAULT_HEARTBEAT_INTERVAL_MS = 100
DEFAULT_ELECTION_TIMEOUT_MS = 1000
DEFAULT_SNAPSHOT_COUNT = 100_000
DEFAULT_SNAPSHOT_CATCHUP_ENTRIES = 5000
DEFAULT_MAX_REQUEST_BYTES = 1572864  # etcd: 1.5 MiB
DEFAULT_QUOTA_BACKEND_BYTES = 2 << 30  # etcd: 2 GiB
DEFAULT_CLUSTER_TOKEN = "etcd-cluster"
"""etcd's default ``--initial-cluster-token``, so ids match etcd's for the same flags."""

MAX_APPLY_LAG = 5000
"""Proposals are refused ("too many requests") while commit runs this far ahead of apply (etcd)."""


@dataclass(slots=True)
class MemberConfig:
    """Everything a member needs to start; built from the command line or by tests."""

    name: str
    data_dir: str
    initial_cluster: InitialCluster
    listen_peer_urls: list[str]
    initial_advertise_peer_urls: list[str]
    listen_client_urls: list[str] = field(default_factory=list)
    advertise_client_urls: list[str] = field(default_factory=list)
    listen_metrics_urls: list[str] = field(default_factory=list)
    initial_cluster_state: str = CLUSTER_STATE_NEW
    heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS
    election_timeout_ms: int = DEFAULT_ELECTION_TIMEOUT_MS
    snapshot_count: int = DEFAULT_SNAPSHOT_COUNT
    snapshot_catchup_entries: int = DEFAULT_SNAPSHOT_CATCHUP_ENTRIES
    # Kept for the next milestone (the MVCC store and the gRPC API).
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Test-only: serves /debug/* on the metrics listener (never in production).
    enable_debug_endpoints: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent setting."""
        if not self.name:
            raise ValueError("--name must not be empty")
        if self.heartbeat_interval_ms <= 0:
            raise ValueError("--heartbeat-interval must be positive")
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms:
            raise ValueError(
                f"--election-timeout ({self.election_timeout_ms}) must be at least "
                f"5 times --heartbeat-interval ({self.heartbeat_interval_ms})"
            )
        if self.snapshot_count <= 0:
            raise ValueError("--snapshot-count must be positive")
        if self.snapshot_catchup_entries < 0:
            raise ValueError("--experimental-snapshot-catchup-entries must not be negative")
        if self.initial_cluster_state not in (CLUSTER_STATE_NEW, CLUSTER_STATE_EXISTING):
            raise ValueError("--initial-cluster-state must be 'new' or 'existing'")
        if not self.listen_peer_urls:
            raise ValueError("--listen-peer-urls must name at least one URL")
        urls = self.initial_cluster.peer_urls_by_name.get(self.name)
        if urls is None:
            raise ValueError(f"--name {self.name!r} is not in --initial-cluster")
        if sorted(urls) != sorted(self.initial_advertise_peer_urls):
            raise ValueError(
                f"--initial-cluster has {self.name}={','.join(urls)} but "
                f"--initial-advertise-peer-urls is {','.join(self.initial_advertise_peer_urls)}"
            )
        self.initial_cluster.member_ids()  # refuses duplicate peer URLs

    @property
    def heartbeat_tick(self) -> int:
        """Raft ticks between heartbeats: one tick is one heartbeat interval."""
        return 1

    @property
    def election_tick(self) -> int:
        """Raft ticks without a leader before campaigning (at least 2)."""
        return max(2, round(self.election_timeout_ms / self.heartbeat_interval_ms))

    @property
    def request_timeout(self) -> float:
        """Seconds a proposal or read may wait: etcd's 5 s plus two election timeouts."""
        return 5.0 + 2 * self.election_timeout_ms / 1000
