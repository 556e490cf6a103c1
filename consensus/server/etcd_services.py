"""Assembly of the etcd v3 gRPC API for one member: every service on one server."""

from __future__ import annotations

from consensus.server import kv_service
from consensus.server.config import MemberConfig
from consensus.server.etcd_server import EtcdServer, MemberPort
from consensus.server.etcd_state import EtcdStateMachine


def build_etcd_server(member: MemberPort, fsm: EtcdStateMachine, config: MemberConfig) -> EtcdServer:
    """The member's gRPC server with every etcd service registered (not started)."""
    server = EtcdServer(member, fsm, max_request_bytes=config.max_request_bytes)
    kv_service.register(server)
    return server
