"""Hand-made histories for the checkers' own tests: a builder, and a simulator of correct ones.

:class:`HistoryBuilder` writes :class:`~tests.robustness.history.Operation`
records with explicit times and outcomes, so a test states a history the way
one draws it on a whiteboard. :func:`simulated_history` produces a random
*linearizable* history (concurrent clients, each op taking effect at a
random instant inside its interval on a real key-value model), which tests
then corrupt in one place to prove the checkers notice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tests.robustness.history import (
    FAILED,
    OK,
    UNKNOWN,
    History,
    LeaseRecord,
    Operation,
    WatchBatch,
    WatchEvent,
    WatchRecord,
)


def kv(key: str, value: str, mod: int, version: int = 1, create: int = 0, lease: int = 0) -> dict[str, Any]:
    """A recorded key-value (``create`` defaults to ``mod``)."""
    return {"key": key, "value": value, "mod": mod, "create": create or mod, "version": version, "lease": lease}


@dataclass
class HistoryBuilder:
    """Appends operations with explicit times; ``ret=None`` means the outcome is unknown."""

    history: History = field(default_factory=History)

    def _add(
        self, kind: str, call: float, ret: float | None, args: dict[str, Any],
        result: dict[str, Any] | None, client: int, status: str | None = None,
    ) -> Operation:
        if status is None:
            status = UNKNOWN if ret is None else OK
        op = Operation(
            id=len(self.history.operations), client=client, kind=kind, call=call, ret=ret,
            args=args, status=status, result=result or {},
            error="UncertainResultError" if status == UNKNOWN else ("refused" if status == FAILED else ""),
        )
        self.history.operations.append(op)
        return op

    def put(self, key: str, value: str, call: float, ret: float | None, revision: int = 0,
            lease: int = 0, client: int = 0) -> Operation:
        """Append a put of ``value`` (``ret=None``: unknown outcome)."""
        return self._add("put", call, ret, {"key": key, "value": value, "size": 8, "lease": lease},
                         {"revision": revision}, client)

    def get(self, key: str, call: float, ret: float, value: str | None, mod: int = 0,
            version: int = 1, revision: int = 0, serializable: bool = False, client: int = 0) -> Operation:
        """Append a get that saw ``value`` (None: absent)."""
        kvs = [] if value is None else [kv(key, value, mod, version)]
        return self._add("get", call, ret, {"key": key, "serializable": serializable},
                         {"kvs": kvs, "revision": revision or mod}, client)

    def range(self, prefix: str, end: str, call: float, ret: float, kvs: list[dict[str, Any]],
              revision: int, serializable: bool = False, client: int = 0) -> Operation:
        """Append a range list that returned ``kvs``."""
        return self._add("range", call, ret, {"key": prefix, "range_end": end, "serializable": serializable},
                         {"kvs": kvs, "revision": revision}, client)

    def delete(self, key: str, call: float, ret: float | None, deleted: int = 1, revision: int = 0,
               client: int = 0) -> Operation:
        """Append a delete of one key."""
        return self._add("delete", call, ret, {"key": key}, {"deleted": deleted, "revision": revision}, client)

    def cas(self, key: str, compare: str, operand: Any, value: str, call: float, ret: float | None,
            succeeded: bool = True, revision: int = 0, kvs: list[dict[str, Any]] | None = None,
            client: int = 0) -> Operation:
        """Append a compare-and-set txn (compare ``compare`` == ``operand``, then put ``value``)."""
        return self._add(
            "txn", call, ret,
            {"key": key, "compare": compare, "operand": operand, "value": value, "size": 8, "lease": 0},
            {"succeeded": succeeded, "revision": revision, "kvs": kvs or []}, client,
        )

    def lease(self, lease_id: int, call: float, keep_alive: bool = True, ttl: int = 60) -> LeaseRecord:
        """Append a lease grant and its :class:`LeaseRecord`."""
        op = self._add("lease_grant", call, call + 0.001, {"ttl": ttl, "keep_alive": keep_alive},
                       {"id": lease_id, "ttl": ttl}, 0)
        record = LeaseRecord(lease_id, ttl, keep_alive, call, op.id)
        self.history.leases.append(record)
        return record

    def revoke(self, lease_id: int, call: float, ret: float | None, revision: int = 0) -> Operation:
        """Append a lease revoke."""
        return self._add("lease_revoke", call, ret, {"lease": lease_id}, {"revision": revision}, 0)


def put_event(key: str, value: str, mod: int, version: int = 1, create: int = 0, lease: int = 0) -> WatchEvent:
    """A put event as a watch delivers it."""
    return WatchEvent("put", key, mod, create or mod, version, value, lease)


def delete_event(key: str, mod: int) -> WatchEvent:
    """A delete event as a watch delivers it."""
    return WatchEvent("delete", key, mod)


def add_watch(
    history: History,
    batches: list[list[WatchEvent] | int],
    key: str = "k",
    range_end: str = "l",
    start_revision: int = 1,
    created_revision: int = 1,
    error: str = "",
) -> WatchRecord:
    """Append a watch whose stream is ``batches``: a list of events, or an int for a progress notification."""
    w = WatchRecord(
        id=len(history.watches), client=0, key=key, range_end=range_end,
        start_revision=start_revision, created_revision=created_revision, error=error,
    )
    for i, b in enumerate(batches):
        if isinstance(b, int):
            w.batches.append(WatchBatch(100.0 + i, b))
        else:
            w.batches.append(WatchBatch(100.0 + i, b[-1].mod if b else 0, list(b)))
    history.watches.append(w)
    return w


def simulated_history(seed: int, clients: int = 4, ops_per_client: int = 60, keys: int = 2,
                      unknown_rate: float = 0.05) -> History:
    """A random linearizable history of puts, gets, deletes and CAS txns on ``keys`` keys.

    Every op takes effect at a random instant inside its interval, in that
    order, on a real revisioned key-value model; a fraction of writes has an
    unknown outcome (half of them did take effect).
    """
    rng = random.Random(seed)
    planned: list[tuple[float, float, float, int, str, str]] = []  # (point, call, ret, client, kind, key)
    for c in range(clients):
        t = rng.random() * 0.01
        for _ in range(ops_per_client):
            call = t
            point = call + rng.random() * 0.02
            ret = point + rng.random() * 0.02
            kind = rng.choice(["put", "put", "get", "get", "delete", "cas", "range"])
            planned.append((point, call, ret, c, kind, f"k{rng.randrange(keys)}"))
            t = ret + rng.random() * 0.005
    planned.sort()
    store: dict[str, tuple[str, int, int]] = {}  # key -> (value, mod, version)
    revision = 1
    builder = HistoryBuilder()
    for counter, (_point, call, ret, c, kind, key) in enumerate(planned, start=1):
        tag = f"v{counter}"
        unknown = kind in ("put", "delete", "cas") and rng.random() < unknown_rate
        applies = not unknown or rng.random() < 0.5
        ret_or_none: float | None = None if unknown else ret
        if kind == "put":
            if applies:
                revision += 1
                old = store.get(key)
                store[key] = (tag, revision, (old[2] if old else 0) + 1)
            builder.put(key, tag, call, ret_or_none, revision=revision, client=c)
        elif kind == "get":
            cur = store.get(key)
            if cur is None:
                builder.get(key, call, ret, None, revision=revision, client=c)
            else:
                builder.get(key, call, ret, cur[0], mod=cur[1], version=cur[2], revision=revision, client=c)
        elif kind == "range":
            kvs = [kv(k, v[0], v[1], v[2]) for k, v in sorted(store.items())]
            builder.range("k", "l", call, ret, kvs, revision, client=c)
        elif kind == "delete":
            existed = key in store
            if applies and existed:
                revision += 1
                del store[key]
            builder.delete(key, call, ret_or_none, deleted=1 if existed else 0, revision=revision, client=c)
        else:  # cas on the mod revision a client would have read
            cur = store.get(key)
            expected = cur[1] if cur and rng.random() < 0.6 else rng.randrange(0, revision + 1)
            holds = (cur[1] if cur else 0) == expected
            if holds and applies:
                revision += 1
                store[key] = (tag, revision, (cur[2] if cur else 0) + 1)
            failure_kvs = [] if cur is None else [kv(key, cur[0], cur[1], cur[2])]
            builder.cas(key, "mod", expected, tag, call, ret_or_none, succeeded=holds,
                        revision=revision, kvs=[] if holds else failure_kvs, client=c)
    builder.history.operations.sort(key=lambda o: o.call)
    for i, op in enumerate(builder.history.operations):
        op.id = i
    return builder.history
