"""Range: reading an interval of keys at a revision, with etcd's exact semantics.

etcd computes a Range in two stages and this module keeps both, because the
``count`` and ``more`` clients see depend on them:

1. the MVCC read: the live keys of the interval at the read revision, in key
   order; ``count`` is how many there are. With a ``limit`` and neither
   sorting nor min/max filters, only ``limit + 1`` are fetched.
2. the server's post-processing: drop keys outside the min/max mod/create
   revision filters, sort (a ``sort_target`` other than KEY with order NONE
   sorts ascending), cut to ``limit`` and set ``more`` if anything was cut.

So ``count`` ignores the filters and ``limit``; and, as in etcd, a Range with
a ``limit``, order NONE and a non-KEY target sorts only the first
``limit + 1`` keys. Sorting is stable: ties stay in key order, also when
descending (etcd's result for small ranges; deterministic for all).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from itertools import islice

from consensus.mvcc.errors import CompactedError, FutureRevisionError
from consensus.mvcc.keyrange import interval
from consensus.mvcc.keyspace import Keyspace
from consensus.mvcc.kv import KeyValue
from consensus.mvcc.requests import RangeRequest, RangeResult, SortOrder, SortTarget

_SORT_KEYS: dict[SortTarget, Callable[[KeyValue], bytes | int]] = {
    SortTarget.KEY: lambda kv: kv.key,
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


def read_revision(requested: int, current: int, compacted: int) -> int | None:
    """The revision a read at ``requested`` sees: None for "the newest state".

    Raises ``FutureRevisionError`` above ``current`` and ``CompactedError``
    below ``compacted`` (reading exactly at the compaction revision is fine).
    """
    if requested > current:
        raise FutureRevisionError()
    if requested <= 0 or requested == current:
        return None
    if requested < compacted:
        raise CompactedError()
    return requested


def execute_range(
    keyspace: Keyspace,
    req: RangeRequest,
    current: int,
    compacted: int,
) -> RangeResult:
    """Run a Range against the key space.

    ``current`` is the revision the reader sees as "now" and is what the
    result reports. Inside a txn that has written it is the txn's own
    revision, so the txn reads its own writes; an explicit ``revision`` there
    is at most the revision before the txn (the store prechecks it), so it
    reads history without them.
    """
    revision = read_revision(req.revision, current, compacted)
    span = interval(req.key, req.range_end)

    if req.count_only:
        return RangeResult([], False, keyspace.count(span, revision), current)

    filtered = (
        req.min_mod_revision
        or req.max_mod_revision
        or req.min_create_revision
        or req.max_create_revision
    )
    fetch_all = req.sort_order != SortOrder.NONE or bool(filtered) or req.limit <= 0
    kvs: list[KeyValue]
    if fetch_all:
        kvs = list(keyspace.scan(span, revision))
        count = len(kvs)
    else:
        scan = keyspace.scan(span, revision)
        kvs = list(islice(scan, min(req.limit, sys.maxsize - 1) + 1))  # any int64 limit
        if revision is None:
            count = keyspace.count(span)
        else:
            count = len(kvs) + sum(1 for _ in scan)

    if filtered:
        kvs = [kv for kv in kvs if _passes(req, kv)]

    order = req.sort_order
    if req.sort_target != SortTarget.KEY and order == SortOrder.NONE:
        order = SortOrder.ASCEND  # etcd: a non-KEY target sorts ascending by default
    if order == SortOrder.DESCEND:
        kvs.sort(key=_SORT_KEYS[req.sort_target], reverse=True)
    elif order == SortOrder.ASCEND and req.sort_target != SortTarget.KEY:
        kvs.sort(key=_SORT_KEYS[req.sort_target])
    # ASCEND by KEY is the scan order already.

    more = False
    if 0 < req.limit < len(kvs):
        del kvs[req.limit :]
        more = True
    if req.keys_only:
        kvs = [kv._replace(value=b"") for kv in kvs]
    return RangeResult(kvs, more, count, current)


def _passes(req: RangeRequest, kv: KeyValue) -> bool:
    """Whether a key version is inside the request's min/max revision filters (0 = no bound)."""
    if req.max_mod_revision and kv.mod_revision > req.max_mod_revision:
        return False
    if req.min_mod_revision and kv.mod_revision < req.min_mod_revision:
        return False
    if req.max_create_revision and kv.create_revision > req.max_create_revision:
        return False
    return not (req.min_create_revision and kv.create_revision < req.min_create_revision)
