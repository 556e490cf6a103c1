"""The replicated state machine's key-value store: etcd's MVCC semantics, in memory.

``KVStore`` applies Range, Put, DeleteRange, Txn, Compact and the lease
operations exactly as an etcd member applies them, and answers HashKV,
watch-history and snapshot queries. It is pure and deterministic: no clock,
randomness or I/O; anything time-dependent arrives as an argument. The same
operations in the same order give the same state, the same results, the
same ``hash_kv`` and the same ``to_bytes`` on every member.

Revisions: a fresh store is at revision 1. Every mutation that changes
something (a put; a delete that deletes something; a txn whose branch writes;
a revoke of a lease with keys) makes exactly one new revision; the changes
within it are numbered by sub revision in the order they were made.

Failure atomicity: every check that can refuse an operation runs before the
first change, so a raised ``MVCCError`` always leaves the store untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from consensus.mvcc.errors import (
    CompactedError,
    FutureRevisionError,
    KeyNotFoundError,
    SnapshotError,
)
from consensus.mvcc.hash import hash_kv
from consensus.mvcc.keyrange import contains, interval
from consensus.mvcc.keyspace import Keyspace
from consensus.mvcc.kv import Event, EventType, KeyValue
from consensus.mvcc.lease import NO_LEASE, LeaseInfo, LeaseTable
from consensus.mvcc.query import execute_range
from consensus.mvcc.requests import (
    DeleteRangeRequest,
    DeleteRangeResult,
    HashKVResult,
    OpResult,
    PutRequest,
    PutResult,
    RangeRequest,
    RangeResult,
    TxnRequest,
    TxnResult,
)
from consensus.mvcc.snapshot import decode, encode
from consensus.mvcc.txn import chosen_ops, txn_path
from consensus.mvcc.validation import (
    DEFAULT_MAX_TXN_OPS,
    check_delete_request,
    check_put_request,
    check_range_request,
    validate_txn,
)

INITIAL_REVISION = 1
"""The revision of an empty store (a fresh etcd reports revision 1)."""

NOT_COMPACTED = -1
"""``compact_revision`` before the first compaction (etcd reports -1 too)."""

DEFAULT_MIN_LEASE_TTL = 2
"""The smallest TTL a grant gets: etcd's value with its default 1 s election timeout.

etcd computes it as ``ceil(3/2 * election timeout)``; the server should pass
the value matching its own Raft timing (the same on every member).
"""

LEASE_OVERHEAD = 64
"""Bytes counted per lease in ``size_bytes``."""

WatchHook = Callable[[int, tuple[Event, ...]], None]
"""Called after each new revision with that revision and its events in sub order."""


class _Pending:
    """The changes of the revision being built by one put, delete, revoke or txn."""

    __slots__ = ("events", "main")

    def __init__(self, main: int) -> None:
        self.main = main
        """The revision these changes get if there are any (current + 1)."""
        self.events: list[Event] = []
        """The changes so far, in sub-revision order."""


def _deleted_by(
    key: bytes, earlier: list[RangeRequest | PutRequest | DeleteRangeRequest]
) -> bool:
    """Whether the last of ``earlier`` ops to touch ``key`` deletes it."""
    for op in reversed(earlier):
        if isinstance(op, PutRequest) and op.key == key:
            return False
        if isinstance(op, DeleteRangeRequest) and contains(interval(op.key, op.range_end), key):
            return True
    return False


class KVStore:
    """An etcd-compatible multi-version key-value store with leases (state only).

    Invariants: ``compact_revision < revision`` or no compaction yet
    (``NOT_COMPACTED``), and ``compact_revision <= revision`` always; every
    live key's lease exists in ``leases`` and lists the key.
    """

    __slots__ = ("_compact_revision", "_hooks", "_keyspace", "_leases", "_revision", "max_txn_ops")

    def __init__(
        self,
        *,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        min_lease_ttl: int = DEFAULT_MIN_LEASE_TTL,
    ) -> None:
        self.max_txn_ops = max_txn_ops
        """The most compares, or ops per branch, a txn may have (etcd's ``--max-txn-ops``)."""
        self._keyspace = Keyspace()
        self._leases = LeaseTable(min_lease_ttl)
        self._revision = INITIAL_REVISION
        self._compact_revision = NOT_COMPACTED
        self._hooks: list[WatchHook] = []

    # ------------------------------------------------------------ state info

    @property
    def revision(self) -> int:
        """The current revision: the one the last change made (1 when empty)."""
        return self._revision

    @property
    def compact_revision(self) -> int:
        """The last compaction revision, or ``NOT_COMPACTED`` (-1)."""
        return self._compact_revision

    @property
    def size_bytes(self) -> int:
        """Approximate bytes of state: every retained version plus the leases (for quotas)."""
        return self._keyspace.size_bytes + LEASE_OVERHEAD * len(self._leases)

    @property
    def key_count(self) -> int:
        """How many keys exist now (metrics)."""
        return self._keyspace.live_count

    @property
    def leases(self) -> LeaseTable:
        """The lease table, for queries; change it only through the store's lease methods."""
        return self._leases

    # -------------------------------------------------------------- KV reads

    def range(self, req: RangeRequest) -> RangeResult:
        """Read keys (etcd's Range: see ``query`` for count/more/sort semantics).

        Raises ``EmptyKeyError``, ``FutureRevisionError``, ``CompactedError``.
        """
        check_range_request(req)
        return execute_range(self._keyspace, req, self._revision, self._compact_revision)

    # ------------------------------------------------------------- KV writes

    def put(self, req: PutRequest) -> PutResult:
        """Write one key; always makes a new revision.

        Raises ``EmptyKeyError``, ``ValueProvidedError``, ``LeaseProvidedError``,
        ``LeaseNotFoundError`` (checked first, as etcd does) and
        ``KeyNotFoundError`` (ignore_value/ignore_lease on a missing key).
        """
        check_put_request(req)
        if req.lease != NO_LEASE:
            self._leases.require(req.lease)
        if (req.ignore_value or req.ignore_lease) and self._keyspace.latest(req.key) is None:
            raise KeyNotFoundError()
        pending = _Pending(self._revision + 1)
        result = self._apply_put(pending, req)
        self._commit(pending)
        return result

    def delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResult:
        """Delete the keys in a range; a new revision only if something was deleted."""
        check_delete_request(req)
        pending = _Pending(self._revision + 1)
        result = self._apply_delete(pending, req)
        self._commit(pending)
        return result

    def txn(self, req: TxnRequest) -> TxnResult:
        """Apply a guarded multi-op atomically, as one revision if it writes.

        The guards (and those of nested txns on the chosen path) see the state
        before the txn; the ops see the writes of the ops before them.
        Refusals, all raised before any change: ``TooManyOpsError``,
        ``EmptyKeyError``, ``ValueProvidedError``, ``LeaseProvidedError``,
        ``DuplicateKeyError`` (etcd's request checks, on both branches), then
        for the chosen path ``KeyNotFoundError`` / ``LeaseNotFoundError`` for
        puts and ``FutureRevisionError`` / ``CompactedError`` for ranges.
        """
        validate_txn(req, self.max_txn_ops)
        path = txn_path(self._keyspace, req)
        self._precheck(req, path)
        pending = _Pending(self._revision + 1)
        result = self._apply_txn(pending, req, path, [0])
        result.revision = pending.main if pending.events else self._revision
        self._commit(pending)
        return result

    def compact(self, revision: int) -> int:
        """Drop history superseded at ``revision``; returns how many versions went.

        Keeps, for every key, its newest version at or before ``revision``
        unless that is a tombstone. Raises ``CompactedError`` when
        ``revision`` is not above the last compaction, ``FutureRevisionError``
        above the current revision. Makes no new revision.
        """
        if revision <= self._compact_revision:
            raise CompactedError()
        if revision > self._revision:
            raise FutureRevisionError()
        removed = self._keyspace.compact(revision, self._compact_revision)
        self._compact_revision = revision
        return removed

    # ---------------------------------------------------------------- leases

    def lease_grant(self, lease_id: int, ttl: int) -> LeaseInfo:
        """Create a lease with an id the proposer chose (never 0); no new revision.

        Raises ``LeaseNotFoundError`` (id 0), ``LeaseTTLTooLargeError``,
        ``LeaseExistsError``. The granted TTL is at least the minimum TTL.
        """
        lease = self._leases.grant(lease_id, ttl)
        return LeaseInfo(lease.id, lease.ttl, lease.ttl)

    def lease_revoke(self, lease_id: int) -> int:
        """Delete the lease and every key attached to it, in one revision.

        Keys are deleted in key order (so every member numbers the sub
        revisions alike). Returns the revision after the revoke (unchanged
        when no key was attached). Raises ``LeaseNotFoundError``.
        """
        lease = self._leases.require(lease_id)
        pending = _Pending(self._revision + 1)
        for key in sorted(lease.keys):
            self._apply_delete(pending, DeleteRangeRequest(key))
        self._leases.remove(lease_id)
        self._commit(pending)
        return self._revision

    def lease_renew(self, lease_id: int, now: float) -> int:
        """A keep-alive at time ``now`` (the leader's clock); returns the TTL granted."""
        return self._leases.renew(lease_id, now)

    def lease_checkpoint(self, lease_id: int, remaining_ttl: int) -> None:
        """Record the remaining TTL the leader measured, so a new leader resumes from it."""
        self._leases.checkpoint(lease_id, remaining_ttl)

    def lease_promote(self, now: float) -> None:
        """Restart every lease's clock at ``now`` (a new leader taking over)."""
        self._leases.promote(now)

    def lease_time_to_live(
        self, lease_id: int, *, now: float | None = None, keys: bool = False
    ) -> LeaseInfo:
        """The lease's remaining TTL as of ``now`` (if its expiry is known), granted TTL and keys.

        Raises ``LeaseNotFoundError``; etcd answers that with TTL -1.
        """
        return self._leases.time_to_live(lease_id, now, keys)

    def lease_leases(self) -> list[int]:
        """Every lease id, ascending (etcd's LeaseLeases)."""
        return self._leases.ids()

    def expired_leases(self, now: float) -> list[int]:
        """The leases whose expiry is at or before ``now``, soonest first: what the leader revokes."""
        return self._leases.expired(now)

    # ----------------------------------------------------------------- watch

    def subscribe(self, hook: WatchHook) -> Callable[[], None]:
        """Call ``hook(revision, events)`` after every new revision; returns an unsubscribe.

        Hooks run synchronously, in subscription order, after the revision is
        committed. If hooks raise, the rest still run and an
        ``ExceptionGroup`` is raised to the caller of the mutation (whose
        change stands).
        """
        self._hooks.append(hook)

        def unsubscribe() -> None:
            if hook in self._hooks:
                self._hooks.remove(hook)

        return unsubscribe

    def events_since(
        self,
        start_revision: int,
        key: bytes,
        range_end: bytes = b"",
        *,
        end_revision: int | None = None,
    ) -> list[Event]:
        """The events on ``[key, range_end)`` from ``start_revision`` on, in revision order.

        ``end_revision`` (inclusive, default current) lets a catching-up
        watcher page through history. ``CompactedError`` when
        ``start_revision`` is below the compaction revision; starting exactly
        at it is allowed, as in etcd, but deletions made at that very
        revision are gone. Each event's ``prev_kv`` is filled when still in
        history.
        """
        if start_revision < self._compact_revision:
            raise CompactedError()
        end = self._revision if end_revision is None else min(end_revision, self._revision)
        return self._keyspace.events(interval(key, range_end), max(start_revision, 1), end)

    def changes(self, revision: int) -> list[Event]:
        """Every event of one revision, in sub-revision order.

        Raises ``CompactedError`` below the compaction revision and
        ``FutureRevisionError`` above the current one.
        """
        if revision < self._compact_revision:
            raise CompactedError()
        if revision > self._revision:
            raise FutureRevisionError()
        return self._keyspace.events((b"", None), revision, revision)

    # ------------------------------------------------------- hash & snapshot

    def hash_kv(self, revision: int = 0) -> HashKVResult:
        """etcd's HashKV at ``revision`` (0: current); equal on members with equal history.

        Raises ``CompactedError`` for a revision at or below the compaction
        revision and ``FutureRevisionError`` above the current one.
        """
        if revision > 0 and revision <= self._compact_revision:
            raise CompactedError()
        if revision > self._revision:
            raise FutureRevisionError()
        at = self._revision if revision == 0 else revision
        value = hash_kv(self._keyspace, at, self._compact_revision)
        return HashKVResult(value, self._compact_revision, at)

    def to_bytes(self) -> bytes:
        """The whole replicated state as deterministic bytes (see ``snapshot``)."""
        return encode(
            self._revision, self._compact_revision, self._keyspace, self._leases.leases()
        )

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        min_lease_ttl: int = DEFAULT_MIN_LEASE_TTL,
    ) -> KVStore:
        """A store holding the state ``to_bytes`` encoded; raises ``SnapshotError``."""
        state = decode(data)
        store = cls(max_txn_ops=max_txn_ops, min_lease_ttl=min_lease_ttl)
        if state.revision < INITIAL_REVISION or not (
            NOT_COMPACTED <= state.compact_revision <= state.revision
        ):
            raise SnapshotError("mvcc: invalid snapshot: bad revisions")
        try:
            store._keyspace = Keyspace.load(state.versions)
        except ValueError as exc:
            raise SnapshotError(f"mvcc: invalid snapshot: {exc}") from exc
        for lease in state.leases:
            store._leases.restore(lease)
        for kv in store._keyspace.scan((b"", None)):
            if kv.lease != NO_LEASE:
                if kv.lease not in store._leases:
                    raise SnapshotError("mvcc: invalid snapshot: key attached to a missing lease")
                store._leases.attach(kv.lease, kv.key)
        store._revision = state.revision
        store._compact_revision = state.compact_revision
        return store

    # -------------------------------------------------------------- applying

    def _precheck(self, req: TxnRequest, path: list[bool]) -> None:
        """etcd's apply-time checks of the ops on the chosen path, against the pre-txn state.

        One addition: a put with ignore_value/ignore_lease whose key an
        earlier op of the same txn deletes is refused here with
        ``KeyNotFoundError``. etcd's duplicate-key check lets that through
        when the delete's ``range_end`` is ``b"\\x00"``, and etcd then
        panics mid-apply; refusing it up front keeps the txn atomic.
        """
        ops = list(chosen_ops(req, path))
        for op in ops:
            if isinstance(op, PutRequest):
                if (op.ignore_value or op.ignore_lease) and self._keyspace.latest(op.key) is None:
                    raise KeyNotFoundError()
                if op.lease != NO_LEASE:
                    self._leases.require(op.lease)
        for op in ops:
            if isinstance(op, RangeRequest) and op.revision != 0:
                if op.revision > self._revision:
                    raise FutureRevisionError()
                if op.revision < self._compact_revision:
                    raise CompactedError()
        # Last, so that wherever etcd answers with an error we answer with the same one.
        for i, op in enumerate(ops):
            if (
                isinstance(op, PutRequest)
                and (op.ignore_value or op.ignore_lease)
                and _deleted_by(op.key, ops[:i])
            ):
                raise KeyNotFoundError()

    def _apply_txn(
        self, pending: _Pending, req: TxnRequest, path: list[bool], cursor: list[int]
    ) -> TxnResult:
        """Run the ops of the branch ``path`` chose; ``cursor[0]`` walks ``path``.

        A nested txn's result has revision 0 (etcd leaves its header empty);
        the caller sets the outermost one's.
        """
        succeeded = path[cursor[0]]
        cursor[0] += 1
        responses: list[OpResult] = []
        for op in req.success if succeeded else req.failure:
            if isinstance(op, RangeRequest):
                view = pending.main if pending.events else self._revision
                responses.append(
                    execute_range(self._keyspace, op, view, self._compact_revision)
                )
            elif isinstance(op, PutRequest):
                responses.append(self._apply_put(pending, op))
            elif isinstance(op, DeleteRangeRequest):
                responses.append(self._apply_delete(pending, op))
            else:
                responses.append(self._apply_txn(pending, op, path, cursor))
        return TxnResult(succeeded, responses, 0)

    def _apply_put(self, pending: _Pending, req: PutRequest) -> PutResult:
        """Write one key version at ``pending.main`` (preconditions already checked)."""
        key = req.key
        prev = self._keyspace.latest(key)
        value, lease = req.value, req.lease
        if req.ignore_value or req.ignore_lease:
            if prev is None:
                raise KeyNotFoundError()  # unreachable: prechecked before any change
            if req.ignore_value:
                value = prev.value
            if req.ignore_lease:
                lease = prev.lease
        if prev is None:
            kv = KeyValue(key, pending.main, pending.main, 1, value, lease)
        else:
            kv = KeyValue(key, prev.create_revision, pending.main, prev.version + 1, value, lease)
        self._keyspace.append(kv)
        if prev is not None and prev.lease != NO_LEASE:
            self._leases.detach(prev.lease, key)
        if lease != NO_LEASE:
            self._leases.attach(lease, key)
        pending.events.append(Event(EventType.PUT, kv, self._keyspace.before(kv)))
        return PutResult(pending.main, prev if req.prev_kv else None)

    def _apply_delete(self, pending: _Pending, req: DeleteRangeRequest) -> DeleteRangeResult:
        """Tombstone every live key in the range at ``pending.main``, in key order."""
        victims = list(self._keyspace.scan(interval(req.key, req.range_end)))
        for kv in victims:
            tombstone = KeyValue(kv.key, 0, pending.main, 0)
            self._keyspace.append(tombstone)
            if kv.lease != NO_LEASE:
                self._leases.detach(kv.lease, kv.key)
            pending.events.append(
                Event(EventType.DELETE, tombstone, self._keyspace.before(tombstone))
            )
        revision = pending.main if pending.events else self._revision
        return DeleteRangeResult(revision, len(victims), victims if req.prev_kv else [])

    def _commit(self, pending: _Pending) -> None:
        """Make the pending changes the new revision (if any) and tell the hooks."""
        if not pending.events:
            return
        self._revision = pending.main
        events = tuple(pending.events)
        errors: list[Exception] = []
        for hook in list(self._hooks):
            try:
                hook(pending.main, events)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise ExceptionGroup("mvcc: watch hook failed", errors)
