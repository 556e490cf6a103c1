"""The ``flagstaff.discovery.v1.Registry`` gRPC service: instances as core keys attached to leases.

Register grants a core lease of the instance's TTL and puts the instance's
document at ``/services/<service>/<instance_id>`` with that lease; KeepAlive
renews the core lease; when the instance stops renewing, the core expires the
lease and deletes the key, and every watcher -- the Registry's Watch, the
platform's services page, ``etcdctl watch /services/ --prefix`` -- sees it
go. The Registry keeps no state that matters: a restarted Registry (or
another one) serves the same catalog, and leases are looked up in the core
when it does not know them.

It reaches the core only through :class:`consensus.client.Client`, and asks
an :class:`discovery.auth.Authorizer` who the caller is and what it may do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, NoReturn

import grpc

from consensus.client import (
    Client,
    CompactedError,
    EtcdError,
    LeaseNotFoundError,
    UnavailableError,
    UncertainResultError,
    compare_mod,
    op_delete,
)
from consensus.client.errors import DeadlineExceededError
from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb
from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2_grpc as pb_grpc
from discovery.auth import DELETE, READ, WRITE, Authorizer, Caller, bearer_secret
from discovery.instances import (
    Instance,
    InvalidInstance,
    instance_from_request,
    instance_key,
    parse_key,
    service_prefix,
    validate_name,
)

log = logging.getLogger(__name__)

ACTOR_METADATA = "flagstaff-actor"
SOURCE_METADATA = "flagstaff-source"
RENEW_ATTEMPT_SECONDS = 1.0
RENEW_ATTEMPTS = 3


def _actor(caller: Caller) -> tuple[tuple[str, str], ...]:
    """The audit metadata of a mutation made for ``caller`` (names are ASCII: no escaping needed)."""
    return ((ACTOR_METADATA, caller.name.encode("ascii", "replace").decode()),
            (SOURCE_METADATA, "grpc"))


async def _abort_for_core(context: grpc.aio.ServicerContext, exc: EtcdError) -> NoReturn:
    if isinstance(exc, UnavailableError | DeadlineExceededError):
        await context.abort(grpc.StatusCode.UNAVAILABLE,
                            f"the core is unavailable: {exc.message or type(exc).__name__}")
    if isinstance(exc, UncertainResultError):
        await context.abort(grpc.StatusCode.UNAVAILABLE,
                            "the core may or may not have applied this change (the connection "
                            "broke); retry: registering is idempotent")
    await context.abort(grpc.StatusCode.INTERNAL,
                        f"the core refused the request: {exc.message or type(exc).__name__}")
    raise AssertionError("unreachable")


class Registry(pb_grpc.RegistryServicer):
    """The Registry servicer over one core client.

    ``_services`` remembers which service each lease it granted or renewed
    belongs to (a cache: an unknown lease is looked up in the core).
    """

    def __init__(self, client: Client, authorizer: Authorizer,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.authorizer = authorizer
        self.clock = clock
        self._services: dict[int, str] = {}

    # -- authentication and permissions ------------------------------------------------------

    async def _caller(self, context: grpc.aio.ServicerContext) -> Caller:
        secret = bearer_secret(context.invocation_metadata())
        if secret is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing credentials: send the metadata 'authorization: Bearer <service token>'")
        caller = await self.authorizer.authenticate(secret)
        if caller is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "unknown, revoked or expired service token")
        return caller

    async def _require(self, context: grpc.aio.ServicerContext, caller: Caller, perm: str,
                       service: str) -> None:
        prefix = service_prefix(service)
        if not await self.authorizer.may(caller, perm, prefix):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{caller.name} may not {perm} {prefix}")

    # -- Register / Deregister ---------------------------------------------------------------

    async def Register(self, request: pb.RegisterRequest,
                       context: grpc.aio.ServicerContext) -> pb.RegisterResponse:
        caller = await self._caller(context)
        try:
            instance = instance_from_request(request, registered_by=caller.name, now=self.clock())
        except InvalidInstance as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._require(context, caller, WRITE, instance.service)
        metadata = _actor(caller)
        try:
            grant = await self.client.lease_grant(instance.ttl, metadata=metadata)
        except EtcdError as exc:
            await _abort_for_core(context, exc)
        lease_id = int(grant.ID)
        try:
            put = await self.client.put(instance.key, instance.document(), lease=lease_id,
                                        prev_kv=True, metadata=metadata)
        except EtcdError as exc:
            with contextlib.suppress(EtcdError):
                await self.client.lease_revoke(lease_id, metadata=metadata)
            await _abort_for_core(context, exc)
        self._services[lease_id] = instance.service
        old_lease = int(put.prev_kv.lease) if put.HasField("prev_kv") else 0
        if old_lease and old_lease != lease_id:
            # Registered again (a restart with the same id): the old lease holds nothing now.
            self._services.pop(old_lease, None)
            with contextlib.suppress(EtcdError):
                await self.client.lease_revoke(old_lease, metadata=metadata)
        revision = int(put.header.revision)
        created = int(put.prev_kv.create_revision) if put.HasField("prev_kv") else revision
        stored = replace(instance, lease_id=lease_id, create_revision=created,
                         mod_revision=revision)
        log.info("registered %s (lease %x, ttl %ss) for %s", instance.key, lease_id,
                 instance.ttl, caller.name)
        return pb.RegisterResponse(lease_id=lease_id, ttl_seconds=int(grant.TTL),
                                   revision=revision, instance=stored.to_pb())

    async def Deregister(self, request: pb.DeregisterRequest,
                         context: grpc.aio.ServicerContext) -> pb.DeregisterResponse:
        caller = await self._caller(context)
        try:
            service = validate_name("service", request.service)
            instance_id = validate_name("instance_id", request.instance_id)
        except InvalidInstance as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._require(context, caller, DELETE, service)
        key = instance_key(service, instance_id)
        metadata = _actor(caller)
        try:
            kv = await self.client.get(key)
            if kv is None:
                return pb.DeregisterResponse(deregistered=False)
            response = await self.client.txn(
                compare=[compare_mod(key, "=", kv.mod_revision)], success=[op_delete(key)],
                metadata=metadata)
        except EtcdError as exc:
            await _abort_for_core(context, exc)
        if kv.lease:
            self._services.pop(int(kv.lease), None)
            with contextlib.suppress(EtcdError):
                await self.client.lease_revoke(int(kv.lease), metadata=metadata)
        log.info("deregistered %s for %s", key, caller.name)
        return pb.DeregisterResponse(deregistered=bool(response.succeeded),
                                     revision=int(response.header.revision))

    # -- KeepAlive ---------------------------------------------------------------------------

    async def _service_of(self, lease_id: int) -> str | None:
        """The service a lease's instance belongs to (None: no such lease, or not an instance's)."""
        service = self._services.get(lease_id)
        if service is not None:
            return service
        ttl = await self.client.lease_time_to_live(lease_id, keys=True)
        if ttl.TTL < 0:
            return None
        for key in ttl.keys:
            parsed = parse_key(bytes(key).decode("utf-8", "replace"))
            if parsed is not None:
                self._services[lease_id] = parsed[0]
                return parsed[0]
        return None

    async def _renew(self, lease_id: int) -> int:
        """Renew a core lease; its TTL. A member that does not answer within
        ``RENEW_ATTEMPT_SECONDS`` is left for the next one (the client fails over), so a
        stopped or partitioned member costs a renewal a second, not the lease."""
        for attempt in range(RENEW_ATTEMPTS):
            try:
                response = await self.client.lease_keepalive_once(
                    lease_id, timeout=RENEW_ATTEMPT_SECONDS)
                return int(response.TTL)
            except (UnavailableError, DeadlineExceededError):
                if attempt == RENEW_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def KeepAlive(self, request_iterator: AsyncIterator[pb.KeepAliveRequest],
                        context: grpc.aio.ServicerContext) -> None:
        caller = await self._caller(context)
        allowed: dict[str, bool] = {}
        write_lock = asyncio.Lock()
        failure: list[tuple[grpc.StatusCode, str]] = []
        pending: set[asyncio.Task[None]] = set()

        async def renew(lease_id: int) -> None:
            try:
                service = await self._service_of(lease_id)
                ttl = 0
                if service is not None:
                    if service not in allowed:
                        allowed[service] = await self.authorizer.may(
                            caller, WRITE, service_prefix(service))
                    if not allowed[service]:
                        failure.append((grpc.StatusCode.PERMISSION_DENIED,
                                        f"{caller.name} may not write {service_prefix(service)}"))
                        return
                    try:
                        ttl = await self._renew(lease_id)
                    except LeaseNotFoundError:
                        self._services.pop(lease_id, None)
                async with write_lock:
                    await context.write(pb.KeepAliveResponse(lease_id=lease_id, ttl_seconds=ttl))
            except EtcdError as exc:
                failure.append((grpc.StatusCode.UNAVAILABLE,
                                f"the core is unavailable: {exc.message or type(exc).__name__}"))

        async for request in request_iterator:
            if failure:
                break
            task = asyncio.get_running_loop().create_task(renew(int(request.lease_id)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if failure:
            await context.abort(*failure[0])

    # -- List / Watch -----------------------------------------------------------------------

    async def _listing(self, service: str) -> tuple[list[Instance], int]:
        response = await self.client.get_prefix(service_prefix(service), sort_order="ascend",
                                                sort_target="key")
        instances = []
        for kv in response.kvs:
            instance = _instance_or_none(kv)
            if instance is not None:
                instances.append(instance)
        return instances, int(response.header.revision)

    async def List(self, request: pb.ListRequest,
                   context: grpc.aio.ServicerContext) -> pb.ListResponse:
        caller = await self._caller(context)
        try:
            service = validate_name("service", request.service) if request.service else ""
        except InvalidInstance as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._require(context, caller, READ, service)
        try:
            instances, revision = await self._listing(service)
        except EtcdError as exc:
            await _abort_for_core(context, exc)
        wanted = set(request.tags)
        selected = [
            i for i in instances
            if (not request.healthy_only or i.healthy) and wanted.issubset(i.tags)
        ]
        return pb.ListResponse(instances=[i.to_pb() for i in selected], revision=revision)

    async def Watch(self, request: pb.WatchRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchEvent]:
        caller = await self._caller(context)
        try:
            service = validate_name("service", request.service) if request.service else ""
        except InvalidInstance as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._require(context, caller, READ, service)
        if request.start_revision < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "start_revision: must not be negative")
        start = int(request.start_revision)
        try:
            if start == 0:
                instances, revision = await self._listing(service)
                for instance in instances:
                    yield pb.WatchEvent(type=pb.WatchEvent.UP, instance=instance.to_pb(),
                                        revision=instance.mod_revision)
                yield pb.WatchEvent(type=pb.WatchEvent.SYNCED, revision=revision)
                start = revision + 1
            async with self.client.watch_prefix(service_prefix(service), start_revision=start,
                                                prev_kv=True) as watch:
                async for batch in watch:
                    for event in batch.events:
                        translated = _watch_event(event)
                        if translated is not None:
                            yield translated
        except CompactedError as exc:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"revision {start} was compacted (oldest available {exc.compact_revision}); "
                "watch again from 0 (the current instances, then live)")
        except EtcdError as exc:
            await _abort_for_core(context, exc)


def _instance_or_none(kv: Any) -> Instance | None:
    if parse_key(bytes(kv.key).decode("utf-8", "replace")) is None:
        return None
    try:
        return Instance.from_kv(kv)
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring malformed instance document at %r", bytes(kv.key))
        return None


def _watch_event(event: Any) -> pb.WatchEvent | None:
    """The Registry event for a core watch event under ``/services/`` (None: not an instance)."""
    kv = event.kv
    revision = int(kv.mod_revision)
    if event.type == 0:  # PUT
        instance = _instance_or_none(kv)
        if instance is None:
            return None
        kind = pb.WatchEvent.UP if kv.create_revision == kv.mod_revision else (
            pb.WatchEvent.CHANGED)
        return pb.WatchEvent(type=kind, instance=instance.to_pb(), revision=revision)
    parsed = parse_key(bytes(kv.key).decode("utf-8", "replace"))
    if parsed is None:
        return None
    last = _instance_or_none(event.prev_kv) if event.HasField("prev_kv") else None
    message = last.to_pb() if last is not None else pb.Instance(
        service=parsed[0], instance_id=parsed[1])
    return pb.WatchEvent(type=pb.WatchEvent.DOWN, instance=message, revision=revision)
