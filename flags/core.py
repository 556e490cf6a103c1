"""The platform's one door to the core: a gateway over ``consensus.client``.

Every read and write the platform makes goes through :class:`CoreGateway`
(``core()`` returns the process-wide one, built from the settings
``FLAGSTAFF_ENDPOINTS``, ``FLAGSTAFF_CORE_USER``/``FLAGSTAFF_CORE_PASSWORD``,
``FLAGSTAFF_CORE_TIMEOUT`` and, for TLS, ``FLAGSTAFF_CA_FILE``/``FLAGSTAFF_CERT_FILE``/
``FLAGSTAFF_KEY_FILE``). It

- keeps one :class:`consensus.client.Client` per event loop (a ``grpc.aio``
  channel belongs to the loop that made it): async code -- websocket
  consumers, the relay, async views -- uses the ``a*`` methods (or
  :meth:`CoreGateway.client` for watches) on its own loop's client;
- gives sync code -- DRF views, Celery tasks, management commands -- blocking
  methods that run on a private event-loop thread with its own client;
- sends the on-behalf-of actor, reason and source (``flagstaff-actor`` /
  ``flagstaff-reason`` / ``flagstaff-source`` gRPC metadata, see :class:`Actor`)
  with every mutation, which the core writes into its audit trail in the same
  apply as the change; reads that trail (``audit_list``, ``client().audit_watch``)
  and appends platform events to it (``audit_append``; see ``flags.audit``);
- makes reads linearizable (the client's default);
- resolves an uncertain write (connection cut after sending) by reading back
  and, when it was not applied, resubmitting it -- safe because every commit
  carries a compare that fails once it has applied;
- turns ``consensus.client`` errors into ``flags.exceptions`` domain errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
import weakref
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.flagstaff.audit.v1 import audit_pb2
from consensus.client import (
    Client,
    EtcdError,
    RequestTooLargeError,
    TooManyOpsError,
    UnavailableError,
    UncertainResultError,
    op_get,
)
from consensus.client.errors import (
    AuthFailedError,
    DeadlineExceededError,
    NoSpaceError,
    PermissionDeniedError,
)
from flags.exceptions import (
    CoreRefused,
    CoreUnavailable,
    CoreUncertain,
    FlagstaffError,
    PayloadTooLarge,
)

T = TypeVar("T")

ACTOR_METADATA = "flagstaff-actor"
REASON_METADATA = "flagstaff-reason"
SOURCE_METADATA = "flagstaff-source"
SOURCES = ("ui", "api", "sdk", "job", "grpc")
"""The doors a change can come through (the audit record's ``source``)."""
MAX_REASON_LENGTH = 1000
"""A change's reason is cut to this many characters before it is sent."""

# Printable ASCII but '%' passes through metadata unchanged; everything else is %-encoded UTF-8.
_METADATA_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%")


def encode_metadata_value(text: str) -> str:
    """``text`` as a gRPC ASCII metadata value: UTF-8 percent-encoded except printable ASCII.

    gRPC metadata values must be printable ASCII; ``%`` itself is encoded, so
    :func:`decode_metadata_value` (``urllib.parse.unquote``) restores any text.
    """
    return quote(text, safe=_METADATA_SAFE)


def decode_metadata_value(value: str) -> str:
    """The text :func:`encode_metadata_value` encoded (the audit viewer's side)."""
    return unquote(value)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who a mutation is made on behalf of, and why: the audit trail's actor and reason.

    ``principal`` is ``user:<username>`` for a person or API token's owner,
    ``system:<component>`` for the platform's own jobs (scheduled rollouts...).
    ``source`` is the door (one of :data:`SOURCES`; empty: the core records ``grpc``).
    """

    principal: str
    reason: str = ""
    source: str = ""

    @classmethod
    def for_user(cls, user: Any, reason: str = "", source: str = "ui") -> Actor:
        """The actor for a Django user (``user:<username>``) acting through ``source``."""
        return cls(f"user:{user.get_username()}", reason, source)

    @classmethod
    def system(cls, component: str, reason: str = "") -> Actor:
        """The platform's own job ``component`` (source ``job``)."""
        return cls(f"system:{component}", reason, "job")

    def with_reason(self, reason: str) -> Actor:
        return Actor(self.principal, reason, self.source)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The gRPC metadata pairs sent with each mutation."""
        pairs = [(ACTOR_METADATA, encode_metadata_value(self.principal))]
        if self.reason:
            pairs.append((REASON_METADATA, encode_metadata_value(self.reason[:MAX_REASON_LENGTH])))
        if self.source:
            pairs.append((SOURCE_METADATA, self.source))
        return tuple(pairs)


@dataclass(frozen=True, slots=True)
class Entry:
    """One key as the core holds it: its value and revisions (``revision`` is the mod revision)."""

    key: str
    value: bytes
    revision: int
    create_revision: int
    version: int

    @classmethod
    def from_kv(cls, kv: Any) -> Entry:
        return cls(
            key=kv.key.decode("utf-8", "surrogateescape"),
            value=bytes(kv.value),
            revision=int(kv.mod_revision),
            create_revision=int(kv.create_revision),
            version=int(kv.version),
        )

    def json(self) -> Any:
        """The value parsed as JSON (raises ``ValueError`` if it is not)."""
        return json.loads(self.value.decode("utf-8"))


@dataclass(frozen=True, slots=True)
class Listing:
    """The keys under a prefix (sorted by key) and the store revision they were read at."""

    entries: list[Entry]
    revision: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Several keys read at one revision (``entries[key]`` is None for an absent key)."""

    entries: dict[str, Entry | None]
    revision: int


def encode_json(value: Any) -> bytes:
    """How the platform writes JSON records: compact UTF-8 (what ``etcdctl get`` shows)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def translate(exc: EtcdError) -> FlagstaffError:
    """The domain error for a ``consensus.client`` error."""
    if isinstance(exc, UncertainResultError):
        return CoreUncertain(
            "the core may or may not have applied this change (the connection broke); "
            "reload and check before trying again"
        )
    if isinstance(exc, UnavailableError | DeadlineExceededError):
        return CoreUnavailable(f"the core is unavailable: {exc.message or type(exc).__name__}")
    if isinstance(exc, RequestTooLargeError):
        return PayloadTooLarge("the change is larger than the core accepts in one request")
    if isinstance(exc, TooManyOpsError):
        return PayloadTooLarge("the change touches more keys than the core accepts in one transaction")
    if isinstance(exc, AuthFailedError):
        return CoreRefused("the core rejected the platform's credentials (FLAGSTAFF_CORE_USER)")
    if isinstance(exc, PermissionDeniedError):
        return CoreRefused("the core denied the platform's core user permission for this key")
    if isinstance(exc, NoSpaceError):
        return CoreRefused("the core is out of space (NOSPACE alarm); ask an operator")
    return CoreRefused(f"the core refused the request: {exc.message or type(exc).__name__}")


class _LoopThread:
    """A daemon thread running an event loop, for sync callers (re-created after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or not self._loop.is_running():
                ready = threading.Event()
                loop = asyncio.new_event_loop()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=main, name="flagstaff-core-gateway", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError(
                "a blocking core call from async code: await the gateway's a* method instead "
                "(or wrap the sync caller with asgiref's sync_to_async)"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop())
        return future.result()  # every core call has its own deadline

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)


class CoreGateway:
    """The platform's connection to the core: per-loop clients, sync and async calls, domain errors.

    Invariant: a :class:`Client` is only used on the event loop it was created on.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no core endpoints configured (FLAGSTAFF_ENDPOINTS)")
        self.endpoints = list(endpoints)
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.username = username
        self.password = password
        self.timeout = timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = (
            weakref.WeakKeyDictionary()
        )
        self._thread = _LoopThread()

    # -- clients and loops ---------------------------------------------------------------

    def client(self) -> Client:
        """The running event loop's client (created on first use); for watches and raw calls."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = Client(
                self.endpoints, timeout=self.timeout, username=self.username, password=self.password,
                ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file,
            )
            self._clients[loop] = client
        return client

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (which uses :meth:`client`) on the gateway's loop thread; blocks."""
        return self._thread.run(coro)

    async def aclose(self) -> None:
        """Close the running loop's client."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        """Close the loop thread's client and stop the thread (other loops' clients are dropped)."""
        loop = self._thread._loop
        if loop is not None and loop.is_running():
            self.run(self.aclose())
        self._thread.stop()
        self._clients.clear()

    # -- async calls ---------------------------------------------------------------------

    async def aget(self, key: str) -> Entry | None:
        """``key`` (a linearizable read), or None."""
        try:
            kv = await self.client().get(key)
        except EtcdError as exc:
            raise translate(exc) from exc
        return None if kv is None else Entry.from_kv(kv)

    async def alist(self, prefix: str, *, keys_only: bool = False) -> Listing:
        """Every key under ``prefix``, sorted, and the revision of the read."""
        try:
            response = await self.client().get_prefix(
                prefix, keys_only=keys_only, sort_order="ascend", sort_target="key"
            )
        except EtcdError as exc:
            raise translate(exc) from exc
        return Listing([Entry.from_kv(kv) for kv in response.kvs], int(response.header.revision))

    async def aget_many(self, keys: Iterable[str]) -> Snapshot:
        """Several keys at one revision (one read-only txn)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return Snapshot({}, 0)
        try:
            response = await self.client().txn(success=[op_get(k) for k in keys])
        except EtcdError as exc:
            raise translate(exc) from exc
        entries: dict[str, Entry | None] = {}
        for key, op in zip(keys, response.responses, strict=True):
            kvs = op.response_range.kvs
            entries[key] = Entry.from_kv(kvs[0]) if kvs else None
        return Snapshot(entries, int(response.header.revision))

    async def acommit(
        self,
        compare: Sequence[pb.Compare],
        success: Sequence[pb.RequestOp],
        failure: Sequence[pb.RequestOp] = (),
        *,
        actor: Actor,
        expect: Mapping[str, bytes | None],
    ) -> pb.TxnResponse:
        """A write transaction on behalf of ``actor``; the core's response.

        ``compare`` must make the txn fail once it has applied (a mod/version/
        create compare on a key it writes): that is what makes resubmitting an
        uncertain commit safe. ``expect`` is the state the success branch leaves
        (value, or None for deleted) of the keys it writes; after an uncertain
        outcome they are read back: if they hold it, the commit applied (a
        response with ``succeeded`` and the revision is synthesized); otherwise
        the txn is resubmitted once.
        """
        if not compare:
            raise ValueError("a commit needs a compare that fails once it has applied")
        metadata = actor.metadata()
        client = self.client()
        try:
            return await client.txn(compare, success, failure, metadata=metadata)
        except UncertainResultError as first:
            try:
                snapshot = await self.aget_many(expect)
                if expect and all(
                    (e.value if e is not None else None) == expect[k]
                    for k, e in snapshot.entries.items()
                ):
                    revision = max((e.revision for e in snapshot.entries.values() if e), default=0)
                    return pb.TxnResponse(
                        succeeded=True,
                        header=pb.ResponseHeader(revision=revision or snapshot.revision),
                    )
                return await client.txn(compare, success, failure, metadata=metadata)
            except EtcdError as exc:
                raise translate(exc) from first
            except FlagstaffError:
                raise translate(first) from first
        except EtcdError as exc:
            raise translate(exc) from exc

    async def astatus(self) -> pb.StatusResponse:
        """The current member's Maintenance.Status (health checks)."""
        try:
            return await self.client().status()
        except EtcdError as exc:
            raise translate(exc) from exc

    # -- blocking calls (sync views, tasks, commands) ------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.run(self.aget(key))

    def list(self, prefix: str, *, keys_only: bool = False) -> Listing:
        return self.run(self.alist(prefix, keys_only=keys_only))

    def get_many(self, keys: Iterable[str]) -> Snapshot:
        return self.run(self.aget_many(list(keys)))

    def commit(
        self,
        compare: Sequence[pb.Compare],
        success: Sequence[pb.RequestOp],
        failure: Sequence[pb.RequestOp] = (),
        *,
        actor: Actor,
        expect: Mapping[str, bytes | None],
    ) -> pb.TxnResponse:
        return self.run(self.acommit(compare, success, failure, actor=actor, expect=expect))

    def status(self) -> pb.StatusResponse:
        return self.run(self.astatus())

    # -- the audit trail -------------------------------------------------------------------

    async def aaudit_list(
        self, key: str = "", *, prefix: bool = False, limit: int = 100, page_token: str = "",
        **filters: Any,
    ) -> audit_pb2.ListResponse:
        """One page of audit records, newest first (filters: see ``Client.audit_list``)."""
        try:
            return await self.client().audit_list(
                key, prefix=prefix, limit=limit, page_token=page_token, **filters
            )
        except EtcdError as exc:
            raise translate(exc) from exc

    async def aaudit_append(self, action: str, *, actor: Actor, key: str = "", detail: str = "") -> int:
        """Record a platform event on behalf of ``actor``; the record's id."""
        try:
            response = await self.client().audit_append(
                action, key=key, detail=detail, metadata=actor.metadata()
            )
        except EtcdError as exc:
            raise translate(exc) from exc
        return int(response.id)

    def audit_list(
        self, key: str = "", *, prefix: bool = False, limit: int = 100, page_token: str = "",
        **filters: Any,
    ) -> audit_pb2.ListResponse:
        return self.run(
            self.aaudit_list(key, prefix=prefix, limit=limit, page_token=page_token, **filters)
        )

    def audit_append(self, action: str, *, actor: Actor, key: str = "", detail: str = "") -> int:
        return self.run(self.aaudit_append(action, actor=actor, key=key, detail=detail))

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the gateway's loop thread without waiting (fire and forget)."""
        return asyncio.run_coroutine_threadsafe(coro, self._thread.loop())


_lock = threading.Lock()
_gateway: CoreGateway | None = None


def core() -> CoreGateway:
    """The process-wide gateway, built from the Django settings on first use."""
    global _gateway
    with _lock:
        if _gateway is None:
            from django.conf import settings

            _gateway = CoreGateway(
                settings.FLAGSTAFF_ENDPOINTS,
                username=settings.FLAGSTAFF_CORE_USER,
                password=settings.FLAGSTAFF_CORE_PASSWORD,
                timeout=settings.FLAGSTAFF_CORE_TIMEOUT,
                ca_file=settings.FLAGSTAFF_CA_FILE,
                cert_file=settings.FLAGSTAFF_CERT_FILE,
                key_file=settings.FLAGSTAFF_KEY_FILE,
            )
        return _gateway


def reset_core() -> None:
    """Forget the process-wide gateway (closing its thread); the next :func:`core` reads the settings again."""
    global _gateway
    with _lock:
        gateway, _gateway = _gateway, None
    if gateway is not None:
        gateway.close()
