"""Assembly of the etcd v3 gRPC API for one member: every service on one server.

Flagstaff's own ``flagstaff.audit.v1.Audit`` service is served beside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from consensus.server import (
    audit_service,
    auth_service,
    cluster_service,
    kv_service,
    lease_service,
    maintenance_service,
    quota,
    watch_service,
)
from consensus.server.config import MemberConfig
from consensus.server.etcd_server import EtcdServer, MemberPort
from consensus.server.etcd_state import EtcdStateMachine
from consensus.server.lessor import Lessor

if TYPE_CHECKING:
    from consensus.server.member import Member


def build_etcd_server(
    member: MemberPort,
    fsm: EtcdStateMachine,
    config: MemberConfig,
    lessor: Lessor | None = None,
    cluster: Member | None = None,
) -> EtcdServer:
    """The member's gRPC server with every etcd service (and Flagstaff's audit) registered."""
    server = EtcdServer(member, fsm, max_request_bytes=config.max_request_bytes)
    kv_service.register(server)
    audit_service.register(server)
    watch_service.register(
        server,
        progress_notify_interval=config.watch_progress_notify_interval,
        election_timeout=config.election_timeout_ms / 1000,
    )
    auth_service.register(server, token_ttl=config.auth_token_ttl)
    if lessor is not None:  # the Lease API needs the member's lessor (see command.serve)
        lease_service.register(server, lessor)
    if cluster is not None:  # Cluster, Maintenance and the quota need the whole member
        cluster_service.register(server, cluster, config.request_timeout)
        maintenance_service.register(server, cluster)
        quota.install(server, cluster.id, config.quota_backend_bytes)
    return server
