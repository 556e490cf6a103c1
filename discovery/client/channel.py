"""A thin asyncio client of the Registry: one channel per address, the bearer token on every call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

import grpc

from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb
from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2_grpc as pb_grpc


class RegistryError(Exception):
    """A call the Registry refused or could not answer: ``code`` (``grpc.StatusCode``) and ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, exc: grpc.aio.AioRpcError) -> RegistryError:
        return cls(exc.code(), exc.details() or "")


class RegistryClient:
    """The Registry at ``target`` (``host:port``), called with ``token``; create inside the loop.

    ``async with`` or :meth:`close`. Errors are raised as :class:`RegistryError`.
    """

    def __init__(self, target: str, token: str, *, timeout: float = 5.0) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ])
        self.stub = pb_grpc.RegistryStub(self._channel)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def register(
        self, service: str, instance_id: str, address: str, port: int, *, ttl: int,
        tags: Sequence[str] = (), metadata: Mapping[str, str] | None = None,
        check: pb.HealthCheck | None = None,
    ) -> pb.RegisterResponse:
        request = pb.RegisterRequest(service=service, instance_id=instance_id, address=address,
                                     port=port, ttl_seconds=ttl, tags=list(tags),
                                     metadata=dict(metadata or {}))
        if check is not None:
            request.check.CopyFrom(check)
        try:
            response: pb.RegisterResponse = await self.stub.Register(
                request, metadata=self._metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise RegistryError.from_rpc(exc) from exc
        return response

    async def deregister(self, service: str, instance_id: str) -> bool:
        try:
            response = await self.stub.Deregister(
                pb.DeregisterRequest(service=service, instance_id=instance_id),
                metadata=self._metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise RegistryError.from_rpc(exc) from exc
        return bool(response.deregistered)

    async def list(self, service: str = "", *, healthy_only: bool = False,
                   tags: Sequence[str] = ()) -> pb.ListResponse:
        try:
            response: pb.ListResponse = await self.stub.List(
                pb.ListRequest(service=service, healthy_only=healthy_only, tags=list(tags)),
                metadata=self._metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise RegistryError.from_rpc(exc) from exc
        return response

    async def watch(self, service: str = "", *,
                    start_revision: int = 0) -> AsyncIterator[pb.WatchEvent]:
        """The Registry's Watch as an async iterator (errors as :class:`RegistryError`)."""
        call = self.stub.Watch(pb.WatchRequest(service=service, start_revision=start_revision),
                               metadata=self._metadata)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise RegistryError.from_rpc(exc) from exc
        finally:
            call.cancel()
