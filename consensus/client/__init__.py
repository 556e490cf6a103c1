"""Flagstaff's asyncio etcd v3 client: the only way the platform and tools reach the core.

``Client`` speaks the etcd v3 gRPC API (so it works against Flagstaff and
against etcd itself); results are the ``etcdserverpb`` messages. See
``docs/client.md`` for the tour, the retry policy and the error classes.

    async with Client(["127.0.0.1:2379", "127.0.0.1:22379"]) as client:
        await client.put("/config/a", "1")
        kv = await client.get("/config/a")
        async for batch in client.watch_prefix("/config/", start_revision=kv.mod_revision):
            ...
"""

from consensus.client.client import Client
from consensus.client.errors import (
    AuthError,
    ClientClosedError,
    CompactedError,
    DeadlineExceededError,
    DuplicateKeyError,
    EtcdError,
    FutureRevisionError,
    InvalidAuthTokenError,
    KeyNotFoundError,
    LeaderChangedError,
    LeaseNotFoundError,
    NoLeaderError,
    NoSpaceError,
    PermissionDeniedError,
    RequestTimedOutError,
    RequestTooLargeError,
    TooManyOpsError,
    UnavailableError,
    UncertainResultError,
)
from consensus.client.keys import FROM_KEY, KeyLike, prefix_end, to_bytes
from consensus.client.kv import (
    compare_create,
    compare_lease,
    compare_mod,
    compare_value,
    compare_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
    txn_writes,
)
from consensus.client.lease import KeepAlive
from consensus.client.watch import Watch

__all__ = [
    "FROM_KEY",
    "AuthError",
    "Client",
    "ClientClosedError",
    "CompactedError",
    "DeadlineExceededError",
    "DuplicateKeyError",
    "EtcdError",
    "FutureRevisionError",
    "InvalidAuthTokenError",
    "KeepAlive",
    "KeyLike",
    "KeyNotFoundError",
    "LeaderChangedError",
    "LeaseNotFoundError",
    "NoLeaderError",
    "NoSpaceError",
    "PermissionDeniedError",
    "RequestTimedOutError",
    "RequestTooLargeError",
    "TooManyOpsError",
    "UnavailableError",
    "UncertainResultError",
    "Watch",
    "compare_create",
    "compare_lease",
    "compare_mod",
    "compare_value",
    "compare_version",
    "op_delete",
    "op_get",
    "op_put",
    "op_txn",
    "prefix_end",
    "to_bytes",
    "txn_writes",
]
