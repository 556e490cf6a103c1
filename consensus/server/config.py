"""A member's configuration: every ``flagstaff node`` flag, validated, in one value object.

Flag names, defaults and units follow etcd (``--heartbeat-interval`` and
``--election-timeout`` in milliseconds, ``--snapshot-count`` in applied
entries, ``--quota-backend-bytes`` in bytes, ``--auto-compaction-retention``
as etcd 3.4 reads it: see ``consensus.server.quota`` and
``consensus.server.auto_compaction``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from consensus.server.cluster import InitialCluster, parse_url
from consensus.server.tls import TlsFiles

CLUSTER_STATE_NEW = "new"
CLUSTER_STATE_EXISTING = "existing"

DEFAULT_HEARTBEAT_INTERVAL_MS = 100
DEFAULT_ELECTION_TIMEOUT_MS = 1000
DEFAULT_SNAPSHOT_COUNT = 100_000
DEFAULT_SNAPSHOT_CATCHUP_ENTRIES = 5000
DEFAULT_MAX_REQUEST_BYTES = 1572864  # etcd: 1.5 MiB
DEFAULT_QUOTA_BACKEND_BYTES = 2 << 30  # etcd: 2 GiB
DEFAULT_AUTH_TOKEN_TTL = 300  # etcd: --auth-token-ttl, seconds
DEFAULT_LEASE_CHECKPOINT_INTERVAL = 300.0  # etcd: 5m, in seconds
DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL = 600.0  # etcd: 10m, in seconds
DEFAULT_CLUSTER_TOKEN = "etcd-cluster"
"""etcd's default ``--initial-cluster-token``, so ids match etcd's for the same flags."""

_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str, flag: str) -> float:
    """Seconds in a Go duration flag value (``5m0s``, ``1.5s``, ``500ms``, ``0``); ValueError names ``flag``."""
    value = text.strip()
    if value in ("0", "+0", "-0"):
        return 0.0
    sign = -1.0 if value.startswith("-") else 1.0
    body = value.lstrip("+-")
    total, pos = 0.0, 0
    for m in _GO_DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f"invalid duration {text!r} for {flag}")
    return sign * total


def parse_go_bool(text: str, flag: str) -> bool:
    """A Go boolean flag value (``true``, ``false``, ``1``, ``0``, ``t``, ``f`` ...); ValueError names ``flag``."""
    value = text.strip().lower()
    if value in ("1", "t", "true"):
        return True
    if value in ("0", "f", "false"):
        return False
    raise ValueError(f"invalid boolean {text!r} for {flag}")


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
    # The space quota, auto compaction and request size of the etcd API.
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    audit_retention: str = "0"
    """``--audit-retention``: audit records older than this go (0: kept forever; see ``audit_retention``)."""
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    auth_token_ttl: int = DEFAULT_AUTH_TOKEN_TTL
    """Seconds an auth token stays valid after Authenticate (see ``auth_tokens``)."""
    # Lease checkpoints (etcd: --experimental-enable-lease-checkpoint and
    # --experimental-lease-checkpoint-interval); on by default here.
    lease_checkpoint: bool = True
    lease_checkpoint_interval: float = DEFAULT_LEASE_CHECKPOINT_INTERVAL
    watch_progress_notify_interval: float = DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL
    """Seconds between progress notifications to idle ``progress_notify`` watchers (etcd: 10m)."""
    # Test-only: serves /debug/* on the metrics listener (never in production).
    enable_debug_endpoints: bool = False
    client_tls: TlsFiles = field(default_factory=TlsFiles)
    """--cert-file, --key-file, --trusted-ca-file, --client-cert-auth (https client and metrics URLs)."""
    peer_tls: TlsFiles = field(default_factory=TlsFiles)
    """--peer-cert-file, --peer-key-file, --peer-trusted-ca-file, --peer-client-cert-auth."""

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
        if self.auth_token_ttl <= 0:
            raise ValueError("--auth-token-ttl must be positive")
        if self.lease_checkpoint_interval <= 0:
            raise ValueError("--experimental-lease-checkpoint-interval must be positive")
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
        self.client_tls.validate("")
        self.peer_tls.validate("peer-")
        for flag, urls, tls, prefix in (
            ("--listen-client-urls", self.listen_client_urls, self.client_tls, ""),
            ("--listen-metrics-urls", self.listen_metrics_urls, self.client_tls, ""),
            ("--listen-peer-urls", self.listen_peer_urls, self.peer_tls, "peer-"),
        ):
            for url in urls:
                if parse_url(url).scheme == "https" and not tls.enabled:
                    raise ValueError(
                        f"{flag} {url} is https: --{prefix}cert-file and --{prefix}key-file are required"
                    )

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
