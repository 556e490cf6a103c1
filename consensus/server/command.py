"""``flagstaff node``: run one core member, configured with etcd's flag names.

``--listen-client-urls`` serve the etcd v3 gRPC API (see
:mod:`consensus.server.etcd_services`). ``--listen-metrics-urls`` serves ``/health``, ``/status`` and
``/metrics`` (see :mod:`consensus.server.metrics_endpoints`). SIGTERM or
SIGINT stops the member gracefully (a leader hands leadership over first)
and the process exits 0; a fatal error exits 1; bad flags exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from consensus.server import config as defaults
from consensus.server.cluster import InitialCluster, parse_url_list
from consensus.server.config import MemberConfig
from consensus.server.tls import TlsFiles

log = logging.getLogger("consensus.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``flagstaff node`` (etcd's names, units and defaults)."""
    member = parser.add_argument_group("member")
    member.add_argument("--name", default="default", help="human-readable name for this member")
    member.add_argument("--data-dir", default=None, help="path to the data directory (default: <name>.etcd)")
    member.add_argument(
        "--listen-peer-urls", default="http://localhost:2380",
        help="comma-separated URLs to listen on for peer traffic",
    )
    member.add_argument(
        "--listen-client-urls", default="http://localhost:2379",
        help="comma-separated URLs to listen on for client traffic (reserved for the gRPC API)",
    )
    member.add_argument(
        "--listen-metrics-urls", default="",
        help="comma-separated URLs serving /health, /status and /metrics over plain HTTP",
    )
    member.add_argument(
        "--heartbeat-interval", type=int, default=defaults.DEFAULT_HEARTBEAT_INTERVAL_MS,
        help="time (in milliseconds) of a heartbeat interval",
    )
    member.add_argument(
        "--election-timeout", type=int, default=defaults.DEFAULT_ELECTION_TIMEOUT_MS,
        help="time (in milliseconds) for an election to timeout",
    )
    member.add_argument(
        "--snapshot-count", type=int, default=defaults.DEFAULT_SNAPSHOT_COUNT,
        help="number of applied entries between two snapshots",
    )
    member.add_argument(
        "--experimental-snapshot-catchup-entries", type=int,
        default=defaults.DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
        help="entries kept behind a snapshot for slow followers to catch up without it",
    )
    member.add_argument(
        "--quota-backend-bytes", type=int, default=defaults.DEFAULT_QUOTA_BACKEND_BYTES,
        help="raise the NOSPACE alarm when the key space would exceed this size "
        "(0: 2 GiB, negative: no quota)",
    )
    member.add_argument(
        "--auto-compaction-mode", default="periodic", choices=("periodic", "revision"),
        help="interpret --auto-compaction-retention as a duration or a revision count",
    )
    member.add_argument(
        "--auto-compaction-retention", default="0",
        help="auto compaction retention for the MVCC key-value store (0 disables it)",
    )
    member.add_argument(
        "--audit-retention", default="0",
        help="keep audit records this long (a duration such as 720h, or hours; 0 keeps them forever)",
    )
    member.add_argument(
        "--max-request-bytes", type=int, default=defaults.DEFAULT_MAX_REQUEST_BYTES,
        help="maximum client request size in bytes the server will accept",
    )
    member.add_argument(
        "--auth-token-ttl", type=int, default=defaults.DEFAULT_AUTH_TOKEN_TTL,
        help="the lifetime in seconds of an auth token",
    )
    member.add_argument(
        "--experimental-enable-lease-checkpoint", nargs="?", const="true", default="true",
        help="the leader records leases' remaining TTLs through Raft, so a new leader resumes them",
    )
    member.add_argument(
        "--experimental-lease-checkpoint-interval", default="5m0s",
        help="interval between two checkpoints of a lease (a Go duration)",
    )
    cluster = parser.add_argument_group("clustering")
    cluster.add_argument(
        "--initial-advertise-peer-urls", default="http://localhost:2380",
        help="this member's peer URLs to advertise to the rest of the cluster",
    )
    cluster.add_argument(
        "--initial-cluster", default=None,
        help="initial cluster configuration for bootstrapping, e.g. m1=http://10.0.0.1:2380,... "
        "(default: <name>=<initial-advertise-peer-urls>)",
    )
    cluster.add_argument(
        "--initial-cluster-state", default=defaults.CLUSTER_STATE_NEW,
        choices=(defaults.CLUSTER_STATE_NEW, defaults.CLUSTER_STATE_EXISTING),
        help="'new' bootstraps a cluster; 'existing' joins one (after `member add`)",
    )
    cluster.add_argument(
        "--initial-cluster-token", default=defaults.DEFAULT_CLUSTER_TOKEN,
        help="initial cluster token, part of every member id during bootstrap",
    )
    cluster.add_argument(
        "--advertise-client-urls", default="http://localhost:2379",
        help="this member's client URLs to advertise to the rest of the cluster",
    )
    security = parser.add_argument_group("security")
    security.add_argument("--cert-file", default="", help="path to the client server TLS cert file")
    security.add_argument("--key-file", default="", help="path to the client server TLS key file")
    security.add_argument(
        "--trusted-ca-file", default="", help="path to the client server TLS trusted CA cert file"
    )
    security.add_argument(
        "--client-cert-auth", nargs="?", const="true", default="false",
        help="enable client cert authentication (clients need a cert signed by --trusted-ca-file)",
    )
    security.add_argument("--peer-cert-file", default="", help="path to the peer server TLS cert file")
    security.add_argument("--peer-key-file", default="", help="path to the peer server TLS key file")
    security.add_argument(
        "--peer-trusted-ca-file", default="", help="path to the peer server TLS trusted CA file"
    )
    security.add_argument(
        "--peer-client-cert-auth", nargs="?", const="true", default="false",
        help="enable peer client cert authentication",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warn", "error"),
        help="log level",
    )
    parser.add_argument(
        "--log-format", default="text", choices=("text", "json"),
        help="log lines as text, or as one JSON object per line",
    )
    # Test-only: /debug/* on the metrics listener (propose, read, membership). Hidden.
    parser.add_argument("--enable-debug-endpoints", action="store_true", help=argparse.SUPPRESS)
    # etcd 3.5's flag (a Go duration, default 10m); hidden here, tests shorten it.
    parser.add_argument(
        "--experimental-watch-progress-notify-interval", default="10m0s", help=argparse.SUPPRESS
    )


def config_from_args(args: argparse.Namespace) -> MemberConfig:
    """Build and validate the member's configuration (ValueError names a bad flag)."""
    advertise_peer = parse_url_list(args.initial_advertise_peer_urls)
    initial_cluster = args.initial_cluster or ",".join(f"{args.name}={u}" for u in advertise_peer)
    config = MemberConfig(
        name=args.name,
        data_dir=args.data_dir or f"{args.name}.etcd",
        initial_cluster=InitialCluster.parse(initial_cluster, args.initial_cluster_token),
        listen_peer_urls=parse_url_list(args.listen_peer_urls),
        initial_advertise_peer_urls=advertise_peer,
        listen_client_urls=parse_url_list(args.listen_client_urls),
        advertise_client_urls=parse_url_list(args.advertise_client_urls),
        listen_metrics_urls=parse_url_list(args.listen_metrics_urls),
        initial_cluster_state=args.initial_cluster_state,
        heartbeat_interval_ms=args.heartbeat_interval,
        election_timeout_ms=args.election_timeout,
        snapshot_count=args.snapshot_count,
        snapshot_catchup_entries=args.experimental_snapshot_catchup_entries,
        quota_backend_bytes=args.quota_backend_bytes,
        auto_compaction_mode=args.auto_compaction_mode,
        auto_compaction_retention=args.auto_compaction_retention,
        audit_retention=args.audit_retention,
        max_request_bytes=args.max_request_bytes,
        auth_token_ttl=args.auth_token_ttl,
        lease_checkpoint=defaults.parse_go_bool(
            args.experimental_enable_lease_checkpoint, "--experimental-enable-lease-checkpoint"
        ),
        lease_checkpoint_interval=defaults.parse_go_duration(
            args.experimental_lease_checkpoint_interval, "--experimental-lease-checkpoint-interval"
        ),
        watch_progress_notify_interval=defaults.parse_go_duration(
            args.experimental_watch_progress_notify_interval,
            "--experimental-watch-progress-notify-interval",
        ),
        enable_debug_endpoints=args.enable_debug_endpoints,
        client_tls=TlsFiles(
            cert_file=args.cert_file,
            key_file=args.key_file,
            trusted_ca_file=args.trusted_ca_file,
            client_cert_auth=defaults.parse_go_bool(args.client_cert_auth, "--client-cert-auth"),
        ),
        peer_tls=TlsFiles(
            cert_file=args.peer_cert_file,
            key_file=args.peer_key_file,
            trusted_ca_file=args.peer_trusted_ca_file,
            client_cert_auth=defaults.parse_go_bool(
                args.peer_client_cert_auth, "--peer-client-cert-auth"
            ),
        ),
    )
    config.validate()
    from consensus.server.auto_compaction import parse_policy

    parse_policy(config.auto_compaction_mode, config.auto_compaction_retention)
    from consensus.server.audit_retention import parse_retention

    parse_retention(config.audit_retention)
    return config


def run(args: argparse.Namespace) -> int:
    """Run a member until it is stopped; the process exit code."""
    level = {"warn": logging.WARNING}.get(args.log_level, args.log_level.upper())
    if getattr(args, "log_format", "text") == "json":
        from consensus.json_logs import JsonFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter({"member": args.name}))
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(
            level=level,
            format=f"%(asctime)s %(levelname)s [{args.name}] %(name)s: %(message)s",
            stream=sys.stderr,
        )
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"flagstaff node: {exc}", file=sys.stderr)
        return 2
    code = run_event_loop(serve(config))
    if code != 0:
        # A fatal error: exit now, like etcd's panic. Everything acknowledged is already
        # durable, and a thread still stuck on the disk (say, ENOSPC) must not keep the
        # process alive after its member has stopped.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    return code


def min_lease_ttl_seconds(election_timeout_ms: int) -> int:
    """The shortest lease TTL granted: etcd's ceil(3/2 * election timeout), in seconds."""
    return max(1, -(-3 * election_timeout_ms // 2000))


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        return asyncio.run(main)
    result: int = uvloop.run(main)
    return result


async def serve(config: MemberConfig) -> int:
    """Start the member and its metrics listener; wait for a signal or a fatal error."""
    # Imported here so that `flagstaff node --help` stays fast.
    from consensus.server import gc_policy
    from consensus.server.etcd_services import build_etcd_server
    from consensus.server.etcd_state import EtcdStateMachine
    from consensus.server.http1 import HttpResponder
    from consensus.server.lessor import Lessor, LessorConfig
    from consensus.server.member import Member
    from consensus.server.member_tasks import start_member_tasks
    from consensus.server.metrics_endpoints import member_routes, store_gauges

    fsm = EtcdStateMachine(min_lease_ttl=min_lease_ttl_seconds(config.election_timeout_ms))
    member = Member(config, fsm=fsm)
    try:
        await member.start()
    except Exception as exc:
        log.error("could not start: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        await member.stop(transfer_leadership=False)
        return 1
    gc_policy.install()
    lessor = Lessor(member, fsm, LessorConfig.for_member(config))
    lessor.start()
    etcd = build_etcd_server(member, fsm, config, lessor=lessor, cluster=member)
    try:
        await etcd.start(config.listen_client_urls, config.client_tls)
    except (OSError, RuntimeError) as exc:
        log.error("could not listen on --listen-client-urls: %s", exc)
        await member.stop(transfer_leadership=False)
        return 1
    responder = HttpResponder(
        member_routes(
            member,
            debug=config.enable_debug_endpoints,
            store=lambda: store_gauges(fsm, etcd.watch_hub),
        )
    )
    try:
        await responder.listen(
            config.listen_metrics_urls,
            config.client_tls.server_context() if config.client_tls.enabled else None,
        )
    except OSError as exc:
        log.error("could not listen on --listen-metrics-urls: %s", exc)
        await member.stop(transfer_leadership=False)
        return 1
    if config.enable_debug_endpoints:
        log.warning("--enable-debug-endpoints is on: /debug/* accepts writes (tests only)")
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signame: str) -> None:
        if stopping:
            return
        log.info("received %s: stopping", signame)
        stopping.append(loop.create_task(member.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    background = start_member_tasks(member, etcd, config)
    code = await member.wait_stopped()
    await background.stop()
    await lessor.stop()
    await etcd.stop()
    await responder.stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    return code
