"""The checks etcd makes on a request before proposing it, as pure functions.

etcd runs these in its gRPC layer, so a refused request never reaches the
log. The store runs them again when applying (they are cheap and depend only
on the request), so the key space is safe whichever door a request comes in
by, and a member applying the log reaches the same verdict as the proposer.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.mvcc.errors import (
    DuplicateKeyError,
    EmptyKeyError,
    LeaseProvidedError,
    TooManyOpsError,
    ValueProvidedError,
)
from consensus.mvcc.requests import (
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)

DEFAULT_MAX_TXN_OPS = 128
"""etcd's default ``--max-txn-ops``."""

_Span = tuple[bytes, bytes]
"""A deleted interval ``[start, end)`` compared literally (see ``check_intervals``)."""


def check_range_request(req: RangeRequest) -> None:
    """A Range needs a key."""
    if not req.key:
        raise EmptyKeyError()


def check_put_request(req: PutRequest) -> None:
    """A Put needs a key, and cannot both ignore and set the value or the lease."""
    if not req.key:
        raise EmptyKeyError()
    if req.ignore_value and req.value:
        raise ValueProvidedError()
    if req.ignore_lease and req.lease:
        raise LeaseProvidedError()


def check_delete_request(req: DeleteRangeRequest) -> None:
    """A DeleteRange needs a key."""
    if not req.key:
        raise EmptyKeyError()


def check_txn_request(req: TxnRequest, max_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """etcd's ``checkTxnRequest``: op counts, empty keys and each op's own checks.

    The count is the largest of the compare list and the two branches; a
    nested txn gets what the enclosing one left of the budget.
    """
    used = max(len(req.compare), len(req.success), len(req.failure))
    if used > max_ops:
        raise TooManyOpsError()
    for compare in req.compare:
        if not compare.key:
            raise EmptyKeyError()
    for op in (*req.success, *req.failure):
        check_request_op(op, max_ops - used)


def check_request_op(op: RequestOp, max_ops: int) -> None:
    """The checks of one txn op (recursing into nested txns)."""
    if isinstance(op, RangeRequest):
        check_range_request(op)
    elif isinstance(op, PutRequest):
        check_put_request(op)
    elif isinstance(op, DeleteRangeRequest):
        check_delete_request(op)
    else:
        check_txn_request(op, max_ops)


def _deleted(spans: list[_Span], key: bytes) -> bool:
    """Whether ``key`` falls in one of the deleted intervals."""
    return any(start <= key < end for start, end in spans)


def check_intervals(ops: Sequence[RequestOp]) -> tuple[set[bytes], list[_Span]]:
    """etcd's ``checkIntervals``: refuse a branch that writes one key twice.

    Returns the keys the branch puts and the intervals it deletes (with its
    nested txns') for the enclosing level; raises ``DuplicateKeyError`` when a
    put repeats a key put before, or falls in a deleted interval. The two
    branches of a nested txn may put the same key (only one runs).

    Faithful to etcd, quirks included: deletes may overlap each other; a
    delete's ``range_end`` is compared literally, so a ``b"\\x00"`` ("from
    key") delete overlaps no put; and a nested txn's deletes are only checked
    against puts that come after it (in later nested txns or at this level).
    """
    spans: list[_Span] = []
    for op in ops:
        if isinstance(op, DeleteRangeRequest):
            end = op.range_end if op.range_end else op.key + b"\x00"
            spans.append((op.key, end))

    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        puts_then, spans_then = check_intervals(op.success)
        puts_else, spans_else = check_intervals(op.failure)
        for key in puts_then:
            if key in puts or _deleted(spans, key):
                raise DuplicateKeyError()
            puts.add(key)
        for key in puts_else:
            if key in puts and key not in puts_then:
                raise DuplicateKeyError()
            if _deleted(spans, key):
                raise DuplicateKeyError()
            puts.add(key)
        spans.extend(spans_then)
        spans.extend(spans_else)

    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or _deleted(spans, op.key):
                raise DuplicateKeyError()
            puts.add(op.key)
    return puts, spans


def validate_txn(req: TxnRequest, max_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """Everything etcd's Txn handler checks before proposing, in etcd's order."""
    check_txn_request(req, max_ops)
    check_intervals(req.success)
    check_intervals(req.failure)
