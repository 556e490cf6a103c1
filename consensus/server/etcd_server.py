"""The etcd v3 gRPC front of a member: shared plumbing for every service.

``EtcdServer`` owns the grpc.aio server bound to ``--listen-client-urls``,
the replicated :class:`EtcdStateMachine`, and what every service needs:
response headers, proposing a request through Raft, linearizable read
barriers, and the translation of errors into etcd's exact gRPC status codes
and messages (clients match on the text).

Services live in their own modules (``kv_service`` ...) and register
themselves through :meth:`EtcdServer.add_service`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as PbMessage

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc import MVCCError
from consensus.mvcc.watch_hub import WatchHub
from consensus.server import auth_tokens, errors, failpoints
from consensus.server.etcd_state import EtcdStateMachine
from consensus.server.internal_request import InternalRequest, Op
from consensus.server.tls import TlsFiles

log = logging.getLogger(__name__)

GRPC_OVERHEAD_BYTES = 512 * 1024
"""Room above --max-request-bytes for gRPC framing (etcd uses the same margin)."""

_MEMBER_ERROR_CODES: dict[type[errors.MemberError], grpc.StatusCode] = {
    errors.NoLeaderError: grpc.StatusCode.UNAVAILABLE,
    errors.RequestTimeoutError: grpc.StatusCode.UNAVAILABLE,
    errors.TimeoutDueToLeaderFailError: grpc.StatusCode.UNAVAILABLE,
    errors.ProposalDroppedError: grpc.StatusCode.UNAVAILABLE,
    errors.LeaderChangedError: grpc.StatusCode.UNAVAILABLE,
    errors.StoppedError: grpc.StatusCode.UNAVAILABLE,
    errors.RequestTooLargeError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.TooManyRequestsError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.LeadershipTransferTimeoutError: grpc.StatusCode.UNAVAILABLE,
    errors.NotLeaderError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.MemberIdExistsError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.MemberIdNotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.MemberIdRemovedError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PeerUrlExistsError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.MemberNotLearnerError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.LearnerNotReadyError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.UnhealthyClusterError: grpc.StatusCode.UNAVAILABLE,
}


class EtcdError(Exception):
    """An error raised by a service with an explicit gRPC code and etcd's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """etcd's (code, message) for an error the services raise, or None if unexpected."""
    if isinstance(exc, EtcdError):
        return exc.code, exc.message
    if isinstance(exc, MVCCError):
        return getattr(grpc.StatusCode, exc.grpc_code), exc.grpc_message
    if isinstance(exc, errors.MemberError):
        for cls in type(exc).__mro__:
            code = _MEMBER_ERROR_CODES.get(cls)
            if code is not None:
                return code, str(exc)
        return grpc.StatusCode.UNKNOWN, str(exc)
    return None


_Req = TypeVar("_Req", bound=PbMessage)
_Resp = TypeVar("_Resp", bound=PbMessage)
Handler = Callable[[Any, _Req, grpc.aio.ServicerContext], Awaitable[_Resp]]


NOT_SUPPORTED_FOR_LEARNER = "etcdserver: rpc not supported for learner"


def supported_by_learner(request: PbMessage) -> bool:
    """etcd's rule (isRPCSupportedForLearner): a learner serves Status and serializable Range only."""
    if isinstance(request, pb.RangeRequest):
        return request.serializable
    return isinstance(request, pb.StatusRequest)


class UndecodableRequest:
    """A unary request whose bytes are not a valid message of the method's type.

    grpc.aio answers a failing request deserializer with ``UNKNOWN``
    ("Unexpected <class 'DecodeError'>"); etcd (Go gRPC) answers ``INTERNAL``
    ("grpc: error unmarshalling request: ..."). So :meth:`EtcdServer.add_service`
    makes unary deserializers return this instead of raising, and :func:`unary`
    refuses it with etcd's code before the handler runs.
    """

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def run(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError as exc:
            return UndecodableRequest(str(exc))

    return run


def _bytes_or(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def run(message: Any) -> bytes:
        return message if type(message) is bytes else serialize(message)

    return run


def _tolerant_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with its request deserializer made tolerant, if it is a unary-unary one.

    A response-streaming handler may write already serialized ``bytes`` (pre-encoded
    watch events, see ``watch_encoding``): they pass its serializer untouched.
    """
    if handler.response_streaming and handler.response_serializer is not None:
        streaming: Any = handler._replace  # RpcMethodHandler is a namedtuple
        passing: grpc.RpcMethodHandler = streaming(response_serializer=_bytes_or(handler.response_serializer))
        return passing
    if handler.request_streaming or handler.response_streaming or handler.request_deserializer is None:
        return handler
    replace: Any = handler._replace  # RpcMethodHandler is a namedtuple
    wrapped: grpc.RpcMethodHandler = replace(request_deserializer=_tolerant(handler.request_deserializer))
    return wrapped


class _UnaryDecodeErrorsAsInternal(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc is untyped
    """Wraps a generated service's handler so that undecodable unary requests reach :func:`unary`."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        return None if handler is None else _tolerant_handler(handler)


class _Registrar:
    """The slice of a grpc.aio server a generated ``add_*Servicer_to_server`` function uses."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_UnaryDecodeErrorsAsInternal(h) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        """Ignored: the same methods came through :meth:`add_generic_rpc_handlers` and are served there.

        Registered methods make grpc.aio's accept loop wait on one pending call
        per method (``asyncio.wait`` over about 50 futures, for every incoming
        call): the generic path waits on one. It cost 10-15% of a member's CPU
        per unary call.
        """


def unary(handler: Handler[_Req, _Resp]) -> Handler[_Req, _Resp]:
    """Decorate a unary service method: map errors to etcd's status codes and messages."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: _Req, context: grpc.aio.ServicerContext) -> _Resp:
        received: object = request  # _tolerant may have put an UndecodableRequest here
        if isinstance(received, UndecodableRequest):
            await context.abort(grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {received.error}")
        try:
            server: EtcdServer | None = getattr(self, "s", None)
            if server is not None and server.member.is_learner and not supported_by_learner(request):
                raise EtcdError(grpc.StatusCode.UNAVAILABLE, NOT_SUPPORTED_FOR_LEARNER)
            return await handler(self, request, context)
        except (EtcdError, MVCCError, errors.MemberError) as exc:
            status = status_of(exc)
            assert status is not None
            await context.abort(status[0], status[1])
            raise  # unreachable: abort raises

    return wrapped


class MemberPort(Protocol):
    """What the gRPC layer needs of the Raft member (``consensus.server.member.Member``)."""

    @property
    def id(self) -> int: ...

    @property
    def cluster_id(self) -> int: ...

    @property
    def leader(self) -> int: ...

    @property
    def term(self) -> int: ...

    @property
    def is_learner(self) -> bool: ...

    async def propose(self, data: bytes, timeout: float | None = None) -> object: ...

    async def read_index(self, timeout: float | None = None) -> int: ...


class EtcdServer:
    """The gRPC server of one member and the helpers every etcd service uses."""

    def __init__(
        self,
        member: MemberPort,
        fsm: EtcdStateMachine,
        *,
        max_request_bytes: int = 3 * 512 * 1024,
    ) -> None:
        self.member = member
        self.fsm = fsm
        self.max_request_bytes = max_request_bytes
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_request_bytes + GRPC_OVERHEAD_BYTES),
                ("grpc.max_send_message_length", 2**31 - 1),
                ("grpc.max_concurrent_streams", 2**31 - 1),
                ("grpc.so_reuseport", 0),
            ]
        )
        self._started = False
        self.client_tls: TlsFiles | None = None
        """``--cert-file`` and friends: served on https client URLs, and used by :meth:`dial`."""
        self.watch_hub: WatchHub | None = None
        """The Watch service's hub (set when it registers); read by ``/metrics``."""
        self.propose_checks: list[Callable[[Op, PbMessage], Awaitable[None]]] = []
        """Awaited in order before every proposal (the space quota); raising refuses the request."""

    # -- wiring ---------------------------------------------------------------------------
    def add_service(self, register: Callable[[Any, Any], None], servicer: Any) -> None:
        """Register a servicer with its generated ``add_*Servicer_to_server`` function.

        Unary requests that do not decode are answered ``INTERNAL`` as etcd does (see
        :class:`UndecodableRequest`).
        """
        register(servicer, _Registrar(self.server))

    async def start(self, client_urls: list[str], tls: TlsFiles | None = None) -> None:
        """Listen on every client URL: ``https://`` ones with ``tls`` (``--cert-file`` ...)."""
        self.client_tls = tls
        for url in client_urls:
            parts = urlsplit(url)
            host = parts.hostname or "127.0.0.1"
            port = parts.port or 2379
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if parts.scheme == "https":
                if tls is None or not tls.enabled:
                    raise OSError(f"{url} is https but no --cert-file/--key-file is configured")
                bound = self.server.add_secure_port(address, tls.grpc_server_credentials())
            else:
                bound = self.server.add_insecure_port(address)
            if bound == 0:
                raise OSError(f"cannot listen for clients on {url}")
        await self.server.start()
        self._started = True

    def dial(self, url: str) -> grpc.aio.Channel:
        """A channel to another member's client URL (forwarding to the leader): TLS with this
        member's client certificate for ``https://``, plaintext for ``http://`` or ``host:port``."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        host = parts.hostname or "127.0.0.1"
        target = f"[{host}]:{parts.port or 2379}" if ":" in host else f"{host}:{parts.port or 2379}"
        if parts.scheme == "https":
            tls = self.client_tls
            creds = tls.grpc_channel_credentials() if tls is not None else grpc.ssl_channel_credentials()
            return grpc.aio.secure_channel(target, creds)
        return grpc.aio.insecure_channel(target)

    async def stop(self, grace: float = 1.0) -> None:
        if self._started:
            await self.server.stop(grace)
            self._started = False

    # -- helpers for services ------------------------------------------------------------------
    def header(self, revision: int | None = None) -> pb.ResponseHeader:
        return pb.ResponseHeader(
            cluster_id=self.member.cluster_id,
            member_id=self.member.id,
            revision=self.fsm.kv.revision if revision is None else revision,
            raft_term=self.member.term,
        )

    def check_has_leader(self, context: grpc.aio.ServicerContext) -> None:
        """Honour the ``hasleader`` metadata: refuse at once when no leader is known."""
        if self.member.leader != 0:
            return
        for key, value in context.invocation_metadata() or ():
            if key == "hasleader" and value == "true":
                raise EtcdError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")

    async def propose(
        self, op: Op, request: PbMessage | bytes, context: grpc.aio.ServicerContext | None = None
    ) -> object:
        """Replicate ``request``; returns apply's result (raising a refusal as an error).

        ``request`` may be an already encoded body (auth entries); those skip ``propose_checks``.
        The entry's principal is the caller's authenticated user (its token is verified here);
        it also carries this member's clock and the audit metadata (``flagstaff-actor``,
        ``flagstaff-reason``, ``flagstaff-source``; see ``audit_access`` for who may send it).
        """
        if not isinstance(request, bytes):
            for check in self.propose_checks:
                await check(op, request)
        body = request if isinstance(request, bytes) else request.SerializeToString()
        if len(body) > self.max_request_bytes:
            raise errors.RequestTooLargeError()
        actor = reason = source = ""
        if context is not None:
            for key, value in context.invocation_metadata() or ():
                if key == "flagstaff-actor" and isinstance(value, str):
                    actor = value
                elif key == "flagstaff-reason" and isinstance(value, str):
                    reason = value
                elif key == "flagstaff-source" and isinstance(value, str):
                    source = value
        principal = auth_tokens.user_of(self.fsm.auth, context)
        data = InternalRequest(
            op, body, int(time.time() * 1000), principal, actor, reason, source
        ).encode()
        result = await self.member.propose(data)
        if isinstance(result, MVCCError):
            raise result
        return result

    async def linearizable_barrier(self) -> None:
        """Wait until this member has applied everything committed when the call began."""
        if failpoints.STALE_FOLLOWER_READS and self.member.leader != self.member.id: return  # noqa: E701 - injected bug (tests only)
        await self.member.read_index()
