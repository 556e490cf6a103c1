"""The discovery process's gRPC server: the Registry, ``grpc.health.v1`` and server reflection.

:func:`serve` binds the server, keeps the health status in step with the
core (SERVING while the core answers, NOT_SERVING otherwise) and runs until
its stop event is set (``manage.py run_discovery`` sets it on SIGTERM or
SIGINT), then stops gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from consensus.client import Client, EtcdError
from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb
from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2_grpc as pb_grpc
from discovery.auth import Authorizer
from discovery.registry import Registry

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Registry"].full_name
"""``flagstaff.discovery.v1.Registry``."""
HEALTH_PROBE_SECONDS = 2.0


async def _follow_core_health(client: Client, servicer: health.aio.HealthServicer) -> None:
    """SERVING while the core answers Status, NOT_SERVING while it does not."""
    serving: bool | None = None
    while True:
        try:
            await client.status(timeout=HEALTH_PROBE_SECONDS)
            now_serving = True
        except EtcdError:
            now_serving = False
        if now_serving != serving:
            status = (health_pb2.HealthCheckResponse.SERVING if now_serving
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            for name in ("", SERVICE_NAME):
                await servicer.set(name, status)
            if serving is not None:
                log.warning("the core is %s", "reachable again" if now_serving else "unreachable")
            serving = now_serving
        await asyncio.sleep(HEALTH_PROBE_SECONDS)


async def serve(
    *,
    host: str,
    port: int,
    endpoints: Sequence[str],
    authorizer: Authorizer,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    stop: asyncio.Event,
    on_listening: Callable[[int, Registry], None] | None = None,
) -> None:
    """Serve the Registry on ``host:port`` (0: any free port) until ``stop`` is set.

    The core is reached at ``endpoints`` (over TLS with ``ca_file``/``cert_file``/``key_file``).

    ``on_listening(port, registry)`` is called once the server accepts calls.
    """
    client = Client(list(endpoints), timeout=timeout, username=username, password=password,
                    ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    server = grpc.aio.server(options=[
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
        ("grpc.max_concurrent_streams", 100_000),
    ])
    registry = Registry(client, authorizer)
    pb_grpc.add_RegistryServicer_to_server(registry, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not listen on {host}:{port}")
    await server.start()
    follower = asyncio.get_running_loop().create_task(_follow_core_health(client, health_servicer))
    if on_listening is not None:
        on_listening(bound, registry)
    try:
        await stop.wait()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=2.0)
        await client.close()
