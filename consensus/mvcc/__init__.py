"""The replicated state machine's key space: etcd's MVCC semantics, pure and in memory.

Modules, one concept each:

- ``kv``: ``KeyValue`` and ``Event``, the values handed out;
- ``requests``: the operations (Range/Put/DeleteRange/Txn/Compare) and results;
- ``errors``: the refusals, with etcd's exact texts and gRPC codes;
- ``keyrange``: etcd's ``(key, range_end)`` convention;
- ``sortedkeys``: the ordered key index;
- ``keyspace``: every retained version, by key, by revision, in key order;
- ``query``: Range semantics (count, more, filters, sorting);
- ``validation``: etcd's request checks (op limits, duplicate keys);
- ``txn``: guard evaluation and the chosen path through nested txns;
- ``lease``: the lease table (state only; expiry decided by the leader);
- ``hash``: HashKV, bit-compatible with etcd's;
- ``snapshot``: the deterministic byte encoding of the whole state;
- ``store``: ``KVStore``, which applies operations and ties the above together;
- ``audit``: the audit trail kept beside the key space (not in it: no revision,
  not in HashKV), appended to by the server's state machine in each apply.
"""

from consensus.mvcc.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseExistsError,
    LeaseNotFoundError,
    LeaseProvidedError,
    LeaseTTLTooLargeError,
    MVCCError,
    SnapshotError,
    TooManyOpsError,
    ValueProvidedError,
)
from consensus.mvcc.keyrange import FROM_KEY, prefix_end
from consensus.mvcc.kv import Event, EventType, KeyValue
from consensus.mvcc.lease import MAX_LEASE_TTL, Lease, LeaseInfo, LeaseTable
from consensus.mvcc.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResult,
    HashKVResult,
    OpResult,
    PutRequest,
    PutResult,
    RangeRequest,
    RangeResult,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResult,
)
from consensus.mvcc.store import (
    DEFAULT_MIN_LEASE_TTL,
    INITIAL_REVISION,
    NOT_COMPACTED,
    KVStore,
    WatchHook,
)
from consensus.mvcc.validation import DEFAULT_MAX_TXN_OPS

__all__ = [
    "DEFAULT_MAX_TXN_OPS",
    "DEFAULT_MIN_LEASE_TTL",
    "FROM_KEY",
    "INITIAL_REVISION",
    "MAX_LEASE_TTL",
    "NOT_COMPACTED",
    "CompactedError",
    "Compare",
    "CompareResult",
    "CompareTarget",
    "DeleteRangeRequest",
    "DeleteRangeResult",
    "DuplicateKeyError",
    "EmptyKeyError",
    "Event",
    "EventType",
    "FutureRevisionError",
    "HashKVResult",
    "KVStore",
    "KeyNotFoundError",
    "KeyValue",
    "Lease",
    "LeaseExistsError",
    "LeaseInfo",
    "LeaseNotFoundError",
    "LeaseProvidedError",
    "LeaseTTLTooLargeError",
    "LeaseTable",
    "MVCCError",
    "OpResult",
    "PutRequest",
    "PutResult",
    "RangeRequest",
    "RangeResult",
    "RequestOp",
    "SnapshotError",
    "SortOrder",
    "SortTarget",
    "TooManyOpsError",
    "TxnRequest",
    "TxnResult",
    "ValueProvidedError",
    "WatchHook",
    "prefix_end",
]
