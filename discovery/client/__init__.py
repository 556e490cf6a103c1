"""The Python helper for services: register with the Registry and find other services (no Django).

    from discovery.client import register, Resolver, HttpCheck

    async with register("payments", "payments-1", "10.0.0.5", 8080,
                        registry="127.0.0.1:7070", token=SERVICE_TOKEN, ttl=10) as registration:
        ...  # registered, kept alive; deregistered on exit (and on SIGTERM)

    async with Resolver("127.0.0.1:7070", SERVICE_TOKEN, "payments") as resolver:
        instance = resolver.pick()          # round robin over healthy instances
        other = resolver.pick_random()

See ``docs/discovery.md``.
"""

from discovery.client.channel import RegistryClient, RegistryError
from discovery.client.registration import (
    GrpcCheck,
    HttpCheck,
    Registration,
    TcpCheck,
    register,
)
from discovery.client.resolver import NoInstancesError, Resolver

__all__ = [
    "GrpcCheck",
    "HttpCheck",
    "NoInstancesError",
    "Registration",
    "RegistryClient",
    "RegistryError",
    "Resolver",
    "TcpCheck",
    "register",
]
