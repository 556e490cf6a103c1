"""The client's connection layer: endpoints, lazy gRPC channels, auth tokens and the retry policy.

A :class:`Transport` owns an ordered list of :class:`Endpoint` s and a
"current" one that every call uses until it fails; then the next endpoint
becomes current (round robin). Channels are created on first use.

Retry policy for unary calls (:meth:`Transport.unary`):

- a *read* (``mutation=False``) that fails with an availability error
  (:class:`~consensus.client.errors.UnavailableError` and its subclasses:
  refused connection, ``no leader``, ``leader changed``, ``server stopped``,
  ``request timed out``) is retried on the next endpoint, round after round
  with a short backoff, until its deadline;
- a *mutation* is retried only when the error proves it was never executed
  (:func:`~consensus.client.errors.never_sent`: no connection to send it on,
  or etcd's up-front ``no leader``/``not capable`` refusal); when the outcome
  is ambiguous it raises :class:`~consensus.client.errors.UncertainResultError`;
- any call refused with ``invalid auth token`` (or ``revision of auth store
  is old``) is retried once after re-authenticating, when the client has
  credentials.

Metadata sent: the caller's extra pairs, ``token`` when authenticated, and
``hasleader: true`` on calls that need a leader (so a leaderless member
refuses at once instead of timing out, and watch/keepalive streams on a
member that loses its leader are cut).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import grpc
from google.protobuf.message import Message

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client.errors import (
    AuthNotEnabledError,
    AuthOldRevisionError,
    ClientClosedError,
    DeadlineExceededError,
    EtcdError,
    InvalidAuthTokenError,
    UncertainResultError,
    UserEmptyError,
    error_from_rpc,
    is_transient,
    never_sent,
    outcome_unknown,
)

Resp = TypeVar("Resp", bound=Message)

MetadataPairs = Sequence[tuple[str, str]]
"""gRPC metadata as (key, value) pairs; keys lowercase."""

# A read with no deadline still gives up after this many rounds over all endpoints.
_MAX_ROUNDS_WITHOUT_DEADLINE = 5
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 0.5

DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.max_send_message_length", 2**31 - 1),
    # Detect a dead peer on a quiet stream (etcd allows pings every 5 s, only with streams open).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # A restarted member is dialled again soon; a dead one fails fast meanwhile.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


@dataclass(frozen=True)
class Method(Generic[Resp]):
    """One etcd RPC: its full gRPC path and response message type."""

    path: str
    response: type[Resp]


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def parse_endpoint(url: str) -> tuple[str, bool]:
    """``(grpc target, use TLS)`` for ``"host:port"``, ``"http://host:port"`` or ``"https://..."``."""
    text = url.strip()
    secure = False
    if text.startswith("https://"):
        secure, text = True, text[len("https://") :]
    elif text.startswith("http://"):
        text = text[len("http://") :]
    text = text.rstrip("/")
    if not text:
        raise ValueError(f"empty endpoint {url!r}")
    return text, secure


@dataclass(frozen=True)
class ClientTls:
    """TLS for the client's channels: etcdctl's ``--cacert``, ``--cert`` and ``--key``.

    With a ``ClientTls``, endpoints without a scheme (``host:port``) are
    dialled over TLS too (as etcdctl does when given ``--cacert``); an explicit
    ``http://`` endpoint stays plaintext. ``ca_file`` verifies the members'
    certificates (empty: the system roots); ``cert_file``/``key_file`` are
    presented to members started with ``--client-cert-auth``.
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate and its key go together")

    def credentials(self) -> Any:
        """The ``grpc.ChannelCredentials`` (files are read here)."""

        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


class Endpoint:
    """One member's client address and its lazily created ``grpc.aio`` channel."""

    def __init__(
        self, url: str, options: Sequence[tuple[str, Any]], tls: ClientTls | None = None
    ) -> None:
        self.url = url
        self.target, self.secure = parse_endpoint(url)
        if tls is not None and not url.strip().startswith("http://"):
            self.secure = True
        self._tls = tls
        self._options = list(options)
        self._channel: Any = None
        self._methods: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Endpoint({self.target!r})"

    @property
    def channel(self) -> Any:
        """The ``grpc.aio.Channel``, created on first use (inside the running loop)."""
        if self._channel is None:
            if self.secure:
                creds = (
                    self._tls.credentials() if self._tls is not None
                    else grpc.ssl_channel_credentials()
                )
                self._channel = grpc.aio.secure_channel(self.target, creds, options=self._options)
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        return self._channel

    def unary(self, method: Method[Resp]) -> Any:
        """The unary-unary callable for ``method`` on this channel (cached)."""
        callable_ = self._methods.get(method.path)
        if callable_ is None:
            callable_ = self.channel.unary_unary(
                method.path,
                request_serializer=_serialize,
                response_deserializer=method.response.FromString,
            )
            self._methods[method.path] = callable_
        return callable_

    def unary_stream(self, method: Method[Resp]) -> Any:
        """The unary-stream callable for ``method`` (not cached: rarely used)."""
        return self.channel.unary_stream(
            method.path,
            request_serializer=_serialize,
            response_deserializer=method.response.FromString,
        )

    def stream_stream(self, method: Method[Resp]) -> Any:
        """The stream-stream callable for ``method`` (not cached: one per stream opened)."""
        return self.channel.stream_stream(
            method.path,
            request_serializer=_serialize,
            response_deserializer=method.response.FromString,
        )

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._methods.clear()
        if channel is not None:
            await channel.close(None)


AUTHENTICATE = Method("/etcdserverpb.Auth/Authenticate", pb.AuthenticateResponse)


class Transport:
    """Endpoints, auth token and retry policy shared by every call of one client."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float | None,
        username: str | None,
        password: str | None,
        metadata: MetadataPairs,
        channel_options: Sequence[tuple[str, Any]] = DEFAULT_CHANNEL_OPTIONS,
        tls: ClientTls | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self._channel_options = list(channel_options)
        self.tls = tls
        self.endpoints = [Endpoint(url, channel_options, tls) for url in endpoints]
        self.endpoints_extra: list[Endpoint] = []  # pinned by maintenance calls, not in rotation
        self.timeout = timeout
        self.metadata: tuple[tuple[str, str], ...] = tuple(metadata)
        self._username = username
        self._password = password
        self._current = 0
        self._token: str | None = None  # "" once the server said auth is not enabled
        self._auth_lock: asyncio.Lock | None = None
        self.authentications = 0  # successful Authenticate calls (diagnostics, tests)
        self.closed = False

    # --- endpoints ---------------------------------------------------------------

    @property
    def current(self) -> Endpoint:
        """The endpoint calls go to until it fails."""
        return self.endpoints[self._current]

    def mark_failed(self, endpoint: Endpoint) -> None:
        """Move on from ``endpoint`` (if it is still current) to the next one."""
        if self.endpoints[self._current] is endpoint:
            self._current = (self._current + 1) % len(self.endpoints)

    def endpoint_for(self, url: str) -> Endpoint:
        """The configured endpoint whose URL or target is ``url`` (or a new one, not in rotation)."""
        target, _ = parse_endpoint(url)
        for endpoint in self.endpoints:
            if endpoint.target == target:
                return endpoint
        extra = Endpoint(url, self._channel_options, self.tls)
        self.endpoints_extra.append(extra)
        return extra

    def deadline(self, timeout: float | None) -> float | None:
        """The loop-time deadline for a call given its ``timeout=`` (None: the client's default)."""
        budget = self.timeout if timeout is None else timeout
        if budget is None or math.isinf(budget):
            return None
        return asyncio.get_running_loop().time() + budget

    # --- auth --------------------------------------------------------------------

    @property
    def has_credentials(self) -> bool:
        return self._username is not None

    async def token(self) -> str | None:
        """The auth token to send (authenticating first if needed); None without credentials."""
        if self._username is None:
            return None
        if self._token is None:
            await self.refresh_token(None)
        return self._token

    async def refresh_token(self, stale: str | None) -> None:
        """Authenticate again unless someone already replaced the ``stale`` token."""
        if self._auth_lock is None:
            self._auth_lock = asyncio.Lock()
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return
            assert self._username is not None and self._password is not None
            request = pb.AuthenticateRequest(name=self._username, password=self._password)
            try:
                response = await self.unary(
                    AUTHENTICATE, request, mutation=False, leader=True, use_token=False
                )
            except AuthNotEnabledError:
                self._token = ""  # as clientv3: credentials against an open cluster are fine
                return
            self._token = response.token
            self.authentications += 1

    def _is_stale_token(self, error: EtcdError, token: str | None) -> bool:
        if not self.has_credentials:
            return False
        if isinstance(error, InvalidAuthTokenError | AuthOldRevisionError):
            return True
        # Auth was enabled after we learnt it was off: the token-less request has no user.
        return isinstance(error, UserEmptyError) and not token

    def call_metadata(
        self, token: str | None, leader: bool, extra: MetadataPairs = ()
    ) -> tuple[tuple[str, str], ...]:
        """The metadata pairs for one call."""
        pairs = list(self.metadata)
        pairs.extend(extra)
        if token:
            pairs.append(("token", token))
        if leader:
            pairs.append(("hasleader", "true"))
        return tuple(pairs)

    # --- calls -------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise ClientClosedError("the client is closed")

    async def unary(
        self,
        method: Method[Resp],
        request: Message,
        *,
        mutation: bool,
        leader: bool,
        timeout: float | None = None,
        metadata: MetadataPairs = (),
        endpoint: Endpoint | None = None,
        use_token: bool = True,
    ) -> Resp:
        """Call ``method`` with the retry policy above; ``endpoint`` pins the call (no failover)."""
        self.check_open()
        loop = asyncio.get_running_loop()
        deadline = self.deadline(timeout)
        refreshed = False
        tried: set[int] = set()
        rounds = 0
        backoff = _BACKOFF_FIRST
        last: tuple[EtcdError, BaseException] | None = None
        while True:
            target = endpoint if endpoint is not None else self.current
            token = await self.token() if use_token else None
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                if last is not None:  # retried until the deadline: the last failure says why
                    raise last[0] from last[1]
                raise DeadlineExceededError("deadline exceeded", grpc.StatusCode.DEADLINE_EXCEEDED)
            try:
                call = target.unary(method)
                response = await call(
                    request, timeout=remaining, metadata=self.call_metadata(token, leader, metadata)
                )
                return cast(Resp, response)
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc)
                cause: BaseException = exc
            except grpc.aio.UsageError as exc:  # channel closed under us
                self.check_open()
                raise ClientClosedError(str(exc)) from exc
            if use_token and not refreshed and self._is_stale_token(error, token):
                refreshed = True
                await self.refresh_token(token)
                continue
            retry = is_transient(error) and (not mutation or never_sent(error))
            if is_transient(error) and endpoint is None:
                self.mark_failed(target)  # whatever happens next, leave this member behind
            if not retry or endpoint is not None:
                if mutation and outcome_unknown(error):
                    raise UncertainResultError(error) from cause
                raise error from cause
            last = (error, cause)
            tried.add(id(target))
            if len(tried) >= len(self.endpoints):
                tried.clear()
                rounds += 1
                if deadline is None and rounds >= _MAX_ROUNDS_WITHOUT_DEADLINE:
                    raise error from cause
                pause = backoff if deadline is None else min(backoff, deadline - loop.time())
                if pause > 0:
                    await asyncio.sleep(pause)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    async def close(self) -> None:
        self.closed = True
        for endpoint in [*self.endpoints, *self.endpoints_extra]:
            await endpoint.close()
