"""Health-check probes: HTTP, TCP and gRPC health, each answering passing or critical and why.

Blocking and self-contained (no Django): a Celery worker runs one probe per
task (``discovery.tasks.run_health_check``).
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from discovery.instances import Check, Health


def probe(check: Check) -> tuple[Health, str]:
    """Run ``check`` once: (PASSING or CRITICAL, a one-line explanation)."""
    if check.kind == "http":
        return _http(check.target, check.timeout)
    if check.kind == "tcp":
        return _tcp(check.target, check.timeout)
    if check.kind == "grpc":
        return _grpc(check.target, check.grpc_service, check.timeout)
    return Health.CRITICAL, f"unknown check kind {check.kind!r}"


def _http(url: str, timeout: float) -> tuple[Health, str]:
    request = urllib.request.Request(url, headers={"User-Agent": "flagstaff-health-check"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return Health.CRITICAL, f"HTTP GET {url}: {exc.code} {exc.reason}"
    except (OSError, ValueError) as exc:
        return Health.CRITICAL, f"HTTP GET {url}: {exc}"
    if 200 <= status < 300:
        return Health.PASSING, f"HTTP GET {url}: {status}"
    return Health.CRITICAL, f"HTTP GET {url}: {status}"


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def _tcp(target: str, timeout: float) -> tuple[Health, str]:
    try:
        with socket.create_connection(_split(target), timeout=timeout):
            pass
    except OSError as exc:
        return Health.CRITICAL, f"TCP connect {target}: {exc}"
    return Health.PASSING, f"TCP connect {target}: success"


def _grpc(target: str, service: str, timeout: float) -> tuple[Health, str]:
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            name = code.name if code is not None else "ERROR"
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return Health.CRITICAL, f"gRPC health {target} {service!r}: {name} {details}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        return Health.PASSING, f"gRPC health {target} {service!r}: {status}"
    return Health.CRITICAL, f"gRPC health {target} {service!r}: {status}"
