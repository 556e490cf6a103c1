"""The client's exception hierarchy: etcd's gRPC status codes and messages as Python types.

etcd (and Flagstaff, which copies it) reports failures as a gRPC status whose
message is a fixed text such as ``"etcdserver: mvcc: required revision has been
compacted"``; clients match on that text. :func:`error_from_status` turns a
status (code + message) into the most specific class below, falling back on
the gRPC code when the text is unknown. Every exception is an
:class:`EtcdError` carrying ``.code`` (a :class:`grpc.StatusCode`, or ``None``
for client-side conditions) and ``.message`` (the server's text, verbatim).

Two classes are about the client rather than the server:

- :class:`UncertainResultError` — a *mutation* (put, delete, txn, compact,
  lease grant/revoke, member and auth changes) failed in a way that does not
  tell whether it was applied (``request timed out``, a connection cut after
  the request was sent, the call's deadline). The client never retries those;
  the caller must read back to find out. ``.cause`` is the underlying error.
- :class:`ClientClosedError` — the :class:`~consensus.client.Client` was closed.
"""

from __future__ import annotations

import re
from typing import Any

import grpc


class EtcdError(Exception):
    """Base of every error the client raises: a gRPC status code and etcd's message."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        code = self.code.name if self.code is not None else None
        return f"{type(self).__name__}(code={code}, message={self.message!r})"


class ClientClosedError(EtcdError):
    """The client was closed; no further calls are possible."""


class UncertainResultError(EtcdError):
    """A mutation's outcome is unknown: it may or may not have been applied.

    Raised instead of retrying, because retrying a put/txn/delete that did
    apply would apply it twice. ``.cause`` is the error that made the outcome
    uncertain (``RequestTimedOutError``, ``UnavailableError`` after the
    request was sent, ``DeadlineExceededError``, ...).
    """

    def __init__(self, cause: EtcdError) -> None:
        super().__init__(cause.message, cause.code)
        self.cause = cause

    def __repr__(self) -> str:
        return f"UncertainResultError(cause={self.cause!r})"


class DeadlineExceededError(EtcdError):
    """The call's deadline (``timeout=``) passed before an answer arrived."""


class UnimplementedError(EtcdError):
    """The server does not know the RPC (e.g. ``AuthStatus`` on etcd 3.4)."""


class CancelledError(EtcdError):
    """The server cancelled the request (``context canceled``)."""


# --- availability: the member cannot serve now; another member may -----------------


class UnavailableError(EtcdError):
    """The member could not serve the request (gRPC UNAVAILABLE): down, unreachable, leaderless."""


class NoLeaderError(UnavailableError):
    """``etcdserver: no leader`` — the member knows no leader (rejected before being handled)."""


class LeaderChangedError(UnavailableError):
    """``etcdserver: leader changed`` — leadership moved while the request was served."""


class ServerStoppedError(UnavailableError):
    """``etcdserver: server stopped`` (or not started yet)."""


class NotCapableError(UnavailableError):
    """``etcdserver: not capable`` — the cluster version does not support the call yet."""


class LearnerNotSupportedError(UnavailableError):
    """``etcdserver: rpc not supported for learner``."""


class UnhealthyClusterError(UnavailableError):
    """``etcdserver: unhealthy cluster`` — a membership change would lose quorum."""


class RequestTimedOutError(UnavailableError):
    """``etcdserver: request timed out`` (and its "possibly due to ..." variants): outcome unknown."""


# --- key-value -----------------------------------------------------------------------


class CompactedError(EtcdError):
    """``etcdserver: mvcc: required revision has been compacted``.

    From a watch, ``.compact_revision`` is the oldest revision still
    available (the watch must be restarted from a fresh read); from a Range
    it is ``None``.
    """

    def __init__(
        self,
        message: str = "etcdserver: mvcc: required revision has been compacted",
        code: grpc.StatusCode | None = grpc.StatusCode.OUT_OF_RANGE,
        compact_revision: int | None = None,
    ) -> None:
        super().__init__(message, code)
        self.compact_revision = compact_revision

    def __repr__(self) -> str:
        return f"CompactedError(compact_revision={self.compact_revision}, message={self.message!r})"


class FutureRevisionError(EtcdError):
    """``etcdserver: mvcc: required revision is a future revision``."""


class KeyNotFoundError(EtcdError):
    """``etcdserver: key not found`` (a put with ignore_value/ignore_lease on a missing key)."""


class EmptyKeyError(EtcdError):
    """``etcdserver: key is not provided``."""


class ValueProvidedError(EtcdError):
    """``etcdserver: value is provided`` (a value together with ignore_value)."""


class LeaseProvidedError(EtcdError):
    """``etcdserver: lease is provided`` (a lease together with ignore_lease)."""


class TooManyOpsError(EtcdError):
    """``etcdserver: too many operations in txn request``."""


class DuplicateKeyError(EtcdError):
    """``etcdserver: duplicate key given in txn request``."""


class RequestTooLargeError(EtcdError):
    """``etcdserver: request is too large``."""


class TooManyRequestsError(EtcdError):
    """``etcdserver: too many requests`` — apply is lagging; back off."""


class NoSpaceError(EtcdError):
    """``etcdserver: mvcc: database space exceeded`` — the NOSPACE alarm is raised."""


class CorruptError(EtcdError):
    """``etcdserver: corrupt cluster``."""


# --- leases --------------------------------------------------------------------------


class LeaseNotFoundError(EtcdError):
    """``etcdserver: requested lease not found`` (also: a kept-alive lease was lost)."""


class LeaseExistsError(EtcdError):
    """``etcdserver: lease already exists``."""


class LeaseTTLTooLargeError(EtcdError):
    """``etcdserver: too large lease TTL``."""


# --- cluster -------------------------------------------------------------------------


class NotLeaderError(EtcdError):
    """``etcdserver: not leader`` (e.g. MoveLeader sent to a follower)."""


class BadLeaderTransfereeError(EtcdError):
    """``etcdserver: bad leader transferee``."""


class MemberError(EtcdError):
    """Base of membership-change refusals."""


class MemberExistsError(MemberError):
    """``etcdserver: member ID already exist``."""


class PeerURLExistsError(MemberError):
    """``etcdserver: Peer URLs already exists``."""


class MemberNotFoundError(MemberError):
    """``etcdserver: member not found``."""


class MemberBadURLsError(MemberError):
    """``etcdserver: given member URLs are invalid``."""


class MemberNotEnoughStartedError(MemberError):
    """``etcdserver: re-configuration failed due to not enough started members``."""


class MemberNotLearnerError(MemberError):
    """``etcdserver: can only promote a learner member``."""


class LearnerNotReadyError(MemberError):
    """``etcdserver: can only promote a learner member which is in sync with leader``."""


class TooManyLearnersError(MemberError):
    """``etcdserver: too many learner members in cluster``."""


# --- auth ----------------------------------------------------------------------------


class AuthError(EtcdError):
    """Base of authentication and authorization errors."""


class PermissionDeniedError(AuthError):
    """``etcdserver: permission denied``."""


class InvalidAuthTokenError(AuthError):
    """``etcdserver: invalid auth token`` — the client re-authenticates once and retries."""


class AuthFailedError(AuthError):
    """``etcdserver: authentication failed, invalid user ID or password``."""


class AuthNotEnabledError(AuthError):
    """``etcdserver: authentication is not enabled``."""


class AuthOldRevisionError(AuthError):
    """``etcdserver: revision of auth store is old`` — retried with a fresh token."""


class InvalidAuthManagementError(AuthError):
    """``etcdserver: invalid auth management`` (e.g. revoking root's root role)."""


class UserExistsError(AuthError):
    """``etcdserver: user name already exists``."""


class UserNotFoundError(AuthError):
    """``etcdserver: user name not found``."""


class UserEmptyError(AuthError):
    """``etcdserver: user name is empty``."""


class RoleExistsError(AuthError):
    """``etcdserver: role name already exists``."""


class RoleNotFoundError(AuthError):
    """``etcdserver: role name not found``."""


class RoleEmptyError(AuthError):
    """``etcdserver: role name is empty``."""


class RoleNotGrantedError(AuthError):
    """``etcdserver: role is not granted to the user``."""


class PermissionNotGrantedError(AuthError):
    """``etcdserver: permission is not granted to the role``."""


class RootUserNotExistError(AuthError):
    """``etcdserver: root user does not exist``."""


class RootRoleNotExistError(AuthError):
    """``etcdserver: root user does not have root role``."""


_BY_MESSAGE: dict[str, type[EtcdError]] = {
    "etcdserver: no leader": NoLeaderError,
    "etcdserver: leader changed": LeaderChangedError,
    "etcdserver: server stopped": ServerStoppedError,
    "etcdserver: server not started": ServerStoppedError,
    "etcdserver: not capable": NotCapableError,
    "etcdserver: rpc not supported for learner": LearnerNotSupportedError,
    "etcdserver: unhealthy cluster": UnhealthyClusterError,
    "etcdserver: request timed out": RequestTimedOutError,
    "etcdserver: request timed out, possibly due to previous leader failure": RequestTimedOutError,
    "etcdserver: request timed out, possibly due to connection lost": RequestTimedOutError,
    "etcdserver: request timed out, leader transfer took too long": RequestTimedOutError,
    "etcdserver: mvcc: required revision has been compacted": CompactedError,
    "etcdserver: mvcc: required revision is a future revision": FutureRevisionError,
    "etcdserver: key not found": KeyNotFoundError,
    "etcdserver: key is not provided": EmptyKeyError,
    "etcdserver: value is provided": ValueProvidedError,
    "etcdserver: lease is provided": LeaseProvidedError,
    "etcdserver: too many operations in txn request": TooManyOpsError,
    "etcdserver: duplicate key given in txn request": DuplicateKeyError,
    "etcdserver: request is too large": RequestTooLargeError,
    "etcdserver: too many requests": TooManyRequestsError,
    "etcdserver: mvcc: database space exceeded": NoSpaceError,
    "etcdserver: corrupt cluster": CorruptError,
    "etcdserver: requested lease not found": LeaseNotFoundError,
    "etcdserver: lease already exists": LeaseExistsError,
    "etcdserver: too large lease TTL": LeaseTTLTooLargeError,
    "etcdserver: not leader": NotLeaderError,
    "etcdserver: bad leader transferee": BadLeaderTransfereeError,
    "etcdserver: member ID already exist": MemberExistsError,
    "etcdserver: ID exists": MemberExistsError,
    "etcdserver: Peer URLs already exists": PeerURLExistsError,
    "etcdserver: member not found": MemberNotFoundError,
    "etcdserver: ID not found": MemberNotFoundError,
    "etcdserver: given member URLs are invalid": MemberBadURLsError,
    "etcdserver: re-configuration failed due to not enough started members": (
        MemberNotEnoughStartedError
    ),
    "etcdserver: can only promote a learner member": MemberNotLearnerError,
    "etcdserver: can only promote a learner member which is in sync with leader": (
        LearnerNotReadyError
    ),
    "etcdserver: too many learner members in cluster": TooManyLearnersError,
    "etcdserver: permission denied": PermissionDeniedError,
    "etcdserver: invalid auth token": InvalidAuthTokenError,
    "etcdserver: authentication failed, invalid user ID or password": AuthFailedError,
    "etcdserver: authentication is not enabled": AuthNotEnabledError,
    "etcdserver: revision of auth store is old": AuthOldRevisionError,
    "etcdserver: invalid auth management": InvalidAuthManagementError,
    "etcdserver: user name already exists": UserExistsError,
    "etcdserver: user name not found": UserNotFoundError,
    "etcdserver: user name is empty": UserEmptyError,
    "etcdserver: role name already exists": RoleExistsError,
    "etcdserver: role name not found": RoleNotFoundError,
    "etcdserver: role name is empty": RoleEmptyError,
    "etcdserver: role is not granted to the user": RoleNotGrantedError,
    "etcdserver: permission is not granted to the role": PermissionNotGrantedError,
    "etcdserver: root user does not exist": RootUserNotExistError,
    "etcdserver: root user does not have root role": RootRoleNotExistError,
}

_BY_CODE: dict[grpc.StatusCode, type[EtcdError]] = {
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
}


_GO_STATUS = re.compile(r"^rpc error: code = (\w+) desc = (.*)$", re.DOTALL)


def error_from_status(code: grpc.StatusCode | None, message: str) -> EtcdError:
    """The most specific :class:`EtcdError` for a gRPC status (etcd's exact text wins).

    A message in Go's ``rpc error: code = X desc = Y`` form (etcd puts those in
    a watch's ``cancel_reason``) is unwrapped first.
    """
    wrapped = _GO_STATUS.match(message)
    if wrapped is not None:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", wrapped.group(1)).upper()
        code = getattr(grpc.StatusCode, name, code)
        message = wrapped.group(2)
    cls = _BY_MESSAGE.get(message)
    if cls is None and message.startswith("etcdserver: request timed out"):
        cls = RequestTimedOutError
    if cls is None and message.startswith("grpc: received message larger than max"):
        cls = RequestTooLargeError  # over etcd's gRPC limit, before its own size check
    if cls is None:
        cls = _BY_CODE.get(code, EtcdError) if code is not None else EtcdError
    if cls is CompactedError:
        return CompactedError(message, code)
    return cls(message, code)


def error_from_rpc(error: Any) -> EtcdError:
    """The :class:`EtcdError` for a ``grpc.aio.AioRpcError`` (or any ``grpc.RpcError`` call)."""
    code: grpc.StatusCode | None = error.code()
    details: str | None = error.details()
    return error_from_status(code, details or "")


# Connection-level gRPC texts that mean no request left this process: the
# channel had no connection to send it on (refused, unresolvable, backing off).
_NOT_SENT_MARKERS = (
    "failed to connect to all addresses",
    "connections to all backends failing",
    "errors resolving",
    "dns resolution failed",
    "name resolution failure",
    "empty address list",
    "no addresses",
)

# etcd refusals issued before the request is handled (interceptor checks), so
# even a mutation provably did nothing. "no leader" is answered up front to
# requests that carry the ``hasleader`` metadata, which every mutation does.
_REFUSED_BEFORE_HANDLING: tuple[type[EtcdError], ...] = (
    NoLeaderError,
    NotCapableError,
    LearnerNotSupportedError,
)


def never_sent(error: EtcdError) -> bool:
    """Whether ``error`` proves the request was not executed (safe to retry even a mutation)."""
    if isinstance(error, _REFUSED_BEFORE_HANDLING):
        return True
    if error.code is not grpc.StatusCode.UNAVAILABLE or type(error) is not UnavailableError:
        return False
    text = error.message.lower()
    return any(marker in text for marker in _NOT_SENT_MARKERS)


def is_transient(error: EtcdError) -> bool:
    """Whether another member (or this one, a moment later) may well serve the request."""
    return isinstance(error, UnavailableError)


def outcome_unknown(error: EtcdError) -> bool:
    """Whether a mutation that failed with ``error`` may nevertheless have been applied.

    True for availability errors that are not provably pre-execution
    (timeouts, a connection cut mid-call, ``server stopped``, ``leader
    changed``), the call's own deadline, cancellation and unclassified
    failures; False for etcd's definitive refusals (permission denied,
    compacted, key not found, ...).
    """
    if never_sent(error):
        return False
    if isinstance(error, UnavailableError | DeadlineExceededError | CancelledError):
        return True
    if type(error) is EtcdError:
        return error.code in (
            None,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.ABORTED,
        )
    return False
