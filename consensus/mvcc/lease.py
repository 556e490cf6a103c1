"""The lease table: which leases exist, their TTLs, expiries and attached keys.

State only. Deciding that a lease has expired is the leader's job: it reads
``expired(now)`` with its own clock and proposes revokes. Every time-dependent
change arrives as an operation carrying the time (``renew(id, now)``,
``promote(now)``) or a duration (``checkpoint(id, remaining_ttl)``), so applying
the same operations gives the same table on every member.

Times are seconds as floats in whatever clock the leader proposes with; the
table only stores and compares them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.mvcc.errors import LeaseExistsError, LeaseNotFoundError, LeaseTTLTooLargeError

MAX_LEASE_TTL = 9_000_000_000
"""etcd's ``MaxLeaseTTL`` in seconds; a grant above it is refused."""

NO_LEASE = 0
"""The lease id that means "no lease"."""


@dataclass(slots=True)
class Lease:
    """One granted lease.

    ``ttl`` is the granted TTL (after raising it to the table's minimum).
    ``remaining_ttl`` is the last checkpointed remaining TTL, 0 when none.
    ``expiry`` is the absolute time the lease runs out, as set by the last
    renew/promote operation, or None while no leader has set one.
    ``keys`` are the keys whose newest version carries this lease.
    """

    id: int
    ttl: int
    remaining_ttl: int = 0
    expiry: float | None = None
    keys: set[bytes] = field(default_factory=set)

    def remaining(self, now: float | None = None) -> int:
        """The whole seconds left: from ``expiry`` when both it and ``now`` are known.

        Otherwise the checkpointed remaining TTL, or the granted TTL.
        """
        if now is not None and self.expiry is not None:
            return max(0, int(self.expiry - now))
        return self.remaining_ttl if self.remaining_ttl > 0 else self.ttl


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as LeaseTimeToLive reports it: TTLs and the attached keys, sorted."""

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...] = ()


class LeaseTable:
    """Every live lease by id, with its TTL bookkeeping and attached keys.

    Invariant: a key is in at most one lease's ``keys``, and it is there
    exactly when its newest version carries that lease (the store keeps this
    by calling ``attach``/``detach`` on every put and delete).
    """

    __slots__ = ("_leases", "min_ttl")

    def __init__(self, min_ttl: int = 0) -> None:
        self.min_ttl = min_ttl
        """Grants below this TTL get this TTL (etcd's ``minLeaseTTL``)."""
        self._leases: dict[int, Lease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def get(self, lease_id: int) -> Lease | None:
        """The lease with this id, or None."""
        return self._leases.get(lease_id)

    def require(self, lease_id: int) -> Lease:
        """The lease with this id; ``LeaseNotFoundError`` if there is none."""
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError()
        return lease

    def ids(self) -> list[int]:
        """Every lease id, ascending."""
        return sorted(self._leases)

    def leases(self) -> list[Lease]:
        """Every lease, by ascending id (the table's own objects: do not change them)."""
        return [self._leases[i] for i in sorted(self._leases)]

    def grant(self, lease_id: int, ttl: int) -> Lease:
        """Create a lease. The id is chosen by the proposer (never 0 here).

        Raises ``LeaseNotFoundError`` for id 0 (as etcd's lessor does),
        ``LeaseTTLTooLargeError`` above ``MAX_LEASE_TTL`` and
        ``LeaseExistsError`` for an id in use.
        """
        if lease_id == NO_LEASE:
            raise LeaseNotFoundError()
        if ttl > MAX_LEASE_TTL:
            raise LeaseTTLTooLargeError()
        if lease_id in self._leases:
            raise LeaseExistsError()
        lease = Lease(lease_id, max(ttl, self.min_ttl))
        self._leases[lease_id] = lease
        return lease

    def remove(self, lease_id: int) -> Lease:
        """Delete the lease from the table (the store deletes its keys first)."""
        lease = self.require(lease_id)
        del self._leases[lease_id]
        return lease

    def restore(self, lease: Lease) -> None:
        """Put back a lease read from a snapshot (its ``keys`` are re-attached later)."""
        self._leases[lease.id] = lease

    def attach(self, lease_id: int, key: bytes) -> None:
        """Record that ``key``'s newest version carries this lease."""
        self.require(lease_id).keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        """Record that ``key`` no longer carries this lease (a missing lease is ignored)."""
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    def renew(self, lease_id: int, now: float) -> int:
        """A keep-alive at time ``now``: the lease runs a full TTL from ``now``.

        Clears the checkpointed remaining TTL, as etcd's renew does. Returns
        the TTL granted (the keep-alive response's TTL).
        """
        lease = self.require(lease_id)
        lease.remaining_ttl = 0
        lease.expiry = now + lease.ttl
        return lease.ttl

    def checkpoint(self, lease_id: int, remaining_ttl: int) -> None:
        """Persist the remaining TTL the leader measured (etcd's lease checkpoint)."""
        self.require(lease_id).remaining_ttl = remaining_ttl

    def promote(self, now: float) -> None:
        """A new leader's restart of every clock: each lease expires its remaining TTL after ``now``."""
        for lease in self._leases.values():
            lease.expiry = now + lease.remaining()

    def expired(self, now: float) -> list[int]:
        """The ids of leases whose expiry is at or before ``now``, soonest first (ties by id)."""
        due = [
            (lease.expiry, lease.id)
            for lease in self._leases.values()
            if lease.expiry is not None and lease.expiry <= now
        ]
        return [lease_id for _, lease_id in sorted(due)]

    def time_to_live(self, lease_id: int, now: float | None = None, keys: bool = False) -> LeaseInfo:
        """The lease's remaining and granted TTL, with its keys when asked.

        Raises ``LeaseNotFoundError`` for an unknown lease; etcd's server turns
        that into a response with TTL -1, which is the gRPC layer's call.
        """
        lease = self.require(lease_id)
        attached = tuple(sorted(lease.keys)) if keys else ()
        return LeaseInfo(lease.id, lease.remaining(now), lease.ttl, attached)
