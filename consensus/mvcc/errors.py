"""The errors the key space raises, each carrying etcd's exact message text.

Clients match on the text, so ``str(error)`` is always etcd's message. Each
class also names the gRPC status code etcd answers with (``grpc_code``, the
``grpc.StatusCode`` member name, as a string so this package never imports
grpc) and the text etcd puts on the wire (``grpc_message``), which for the two
``mvcc:`` errors carries etcd's extra ``etcdserver: `` prefix.
"""

from __future__ import annotations

from typing import ClassVar


class MVCCError(Exception):
    """A request the key space refused; the state is unchanged when it is raised."""

    message: ClassVar[str] = "mvcc: error"
    """etcd's text for this error (also ``str(error)``)."""
    grpc_code: ClassVar[str] = "UNKNOWN"
    """The ``grpc.StatusCode`` member name etcd answers with."""
    grpc_prefix: ClassVar[str] = ""
    """What etcd's gRPC layer puts in front of ``message`` on the wire."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.message)

    @property
    def grpc_message(self) -> str:
        """The status message etcd sends to clients for this error."""
        return self.grpc_prefix + str(self)


class CompactedError(MVCCError):
    """The requested revision is older than the compaction revision."""

    message = "mvcc: required revision has been compacted"
    grpc_code = "OUT_OF_RANGE"
    grpc_prefix = "etcdserver: "


class FutureRevisionError(MVCCError):
    """The requested revision is newer than the store's current revision."""

    message = "mvcc: required revision is a future revision"
    grpc_code = "OUT_OF_RANGE"
    grpc_prefix = "etcdserver: "


class KeyNotFoundError(MVCCError):
    """A put with ignore_value/ignore_lease named a missing key, or a txn op was empty."""

    message = "etcdserver: key not found"
    grpc_code = "INVALID_ARGUMENT"


class EmptyKeyError(MVCCError):
    """A request (or a txn compare) has an empty key."""

    message = "etcdserver: key is not provided"
    grpc_code = "INVALID_ARGUMENT"


class ValueProvidedError(MVCCError):
    """A put sets both ignore_value and a value."""

    message = "etcdserver: value is provided"
    grpc_code = "INVALID_ARGUMENT"


class LeaseProvidedError(MVCCError):
    """A put sets both ignore_lease and a lease."""

    message = "etcdserver: lease is provided"
    grpc_code = "INVALID_ARGUMENT"


class TooManyOpsError(MVCCError):
    """A txn has more compares or ops in one branch than the configured limit."""

    message = "etcdserver: too many operations in txn request"
    grpc_code = "INVALID_ARGUMENT"


class DuplicateKeyError(MVCCError):
    """A txn branch writes one key twice (put/put or put inside a deleted range)."""

    message = "etcdserver: duplicate key given in txn request"
    grpc_code = "INVALID_ARGUMENT"


class LeaseNotFoundError(MVCCError):
    """The named lease does not exist (or the lease id is 0)."""

    message = "etcdserver: requested lease not found"
    grpc_code = "NOT_FOUND"


class LeaseExistsError(MVCCError):
    """A grant named a lease id that is already in use."""

    message = "etcdserver: lease already exists"
    grpc_code = "FAILED_PRECONDITION"


class LeaseTTLTooLargeError(MVCCError):
    """A grant asked for a TTL above ``MAX_LEASE_TTL``."""

    message = "etcdserver: too large lease TTL"
    grpc_code = "OUT_OF_RANGE"


class SnapshotError(MVCCError):
    """Snapshot bytes that are not a valid encoding of a store (Flagstaff's own error)."""

    message = "mvcc: invalid snapshot"
    grpc_code = "DATA_LOSS"
