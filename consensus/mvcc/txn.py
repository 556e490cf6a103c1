"""How a txn picks its branch: guard evaluation and the path through nested txns.

As in etcd, every guard of a txn *and of the nested txns on the chosen path*
is evaluated against the state before the txn starts (not after the ops that
precede it); the outcome is a *path*: the list of booleans, in pre-order, of
each txn met when walking the chosen branches. The store then checks and
applies exactly the ops on that path.
"""

from __future__ import annotations

from collections.abc import Iterator

from consensus.mvcc.keyrange import interval
from consensus.mvcc.keyspace import Keyspace
from consensus.mvcc.kv import KeyValue
from consensus.mvcc.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
)

_ABSENT = KeyValue(b"", 0, 0, 0)
"""What a guard on a missing key compares against: every field zero."""


def compare_kv(compare: Compare, kv: KeyValue) -> bool:
    """Whether one key version satisfies the guard (etcd's ``compareKV``)."""
    result: int
    if compare.target == CompareTarget.VALUE:
        want = compare.operand if isinstance(compare.operand, bytes) else b""
        have = kv.value
        result = (have > want) - (have < want)
    else:
        operand = compare.operand if isinstance(compare.operand, int) else 0
        if compare.target == CompareTarget.VERSION:
            field = kv.version
        elif compare.target == CompareTarget.CREATE:
            field = kv.create_revision
        elif compare.target == CompareTarget.MOD:
            field = kv.mod_revision
        else:
            field = kv.lease
        result = (field > operand) - (field < operand)
    if compare.result == CompareResult.EQUAL:
        return result == 0
    if compare.result == CompareResult.NOT_EQUAL:
        return result != 0
    if compare.result == CompareResult.GREATER:
        return result > 0
    return result < 0


def compare_holds(keyspace: Keyspace, compare: Compare) -> bool:
    """Whether the guard holds on the current state (etcd's ``applyCompare``).

    Every key in the guard's range must satisfy it. With no key there, a
    VALUE guard fails (a missing value is not the empty value); other targets
    compare against zero, so ``version == 0`` tests for absence.
    """
    found = False
    for kv in keyspace.scan(interval(compare.key, compare.range_end)):
        found = True
        if not compare_kv(compare, kv):
            return False
    if found:
        return True
    if compare.target == CompareTarget.VALUE:
        return False
    return compare_kv(compare, _ABSENT)


def txn_path(keyspace: Keyspace, txn: TxnRequest) -> list[bool]:
    """The outcome of every guard met along the chosen branches, in pre-order."""
    succeeded = all(compare_holds(keyspace, c) for c in txn.compare)
    path = [succeeded]
    for op in txn.success if succeeded else txn.failure:
        if isinstance(op, TxnRequest):
            path.extend(txn_path(keyspace, op))
    return path


def chosen_ops(
    txn: TxnRequest, path: list[bool]
) -> Iterator[RangeRequest | PutRequest | DeleteRangeRequest]:
    """The non-txn ops on the path, in execution order (nested txns flattened)."""
    position = 0

    def walk(node: TxnRequest) -> Iterator[RangeRequest | PutRequest | DeleteRangeRequest]:
        nonlocal position
        branch = node.success if path[position] else node.failure
        position += 1
        for op in branch:
            if isinstance(op, TxnRequest):
                yield from walk(op)
            else:
                yield op

    return walk(txn)
