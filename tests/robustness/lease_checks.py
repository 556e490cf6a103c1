"""Lease semantics, checked against the reference revision history and the final observations.

* **revoked means gone** — after a revoke of lease L acknowledged at revision
  R, no key attached to L exists at R, and no later put attaches a key to L;
* **every deletion has a cause** — each delete event in the reference is
  explained by a client delete of that key (acknowledged at that revision, or
  of unknown outcome and sent before anyone saw the revision), by a revoke of
  the key's lease (likewise), or by the expiry of a lease that was *not* kept
  alive. A key of a kept-alive lease that vanishes otherwise means the lease
  expired although it was renewed -- e.g. across a leader change;
* **kept alive means alive** — the keep-alive of a lease never reported it
  lost unless the traffic revoked it, and after the run it still has a TTL
  (unless the keep-alive *lapsed*: no renewal got through before the expiry
  the client last knew of, e.g. during a full-cluster restart);
* **expired means gone** — a lease that was not kept alive has no TTL left
  after the run (the scenario waits out its TTL first), and its keys are gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tests.robustness.history import OK, UNKNOWN, History, Operation
from tests.robustness.replay import Reference, states_at


@dataclass
class LeaseResult:
    """Lease violations (empty: all good) and how much was checked."""

    violations: list[str] = field(default_factory=list)
    leases: int = 0
    deletions: int = 0

    @property
    def ok(self) -> bool:
        """Whether no lease violation was found."""
        return not self.violations

    def report(self) -> str:
        """The violations, one per line."""
        return "\n".join(self.violations[:30])


def _may_have_happened_by(op: Operation, revision: int, ref: Reference) -> bool:
    """Whether ``op`` can be the cause of a change at ``revision`` (acknowledged there, or unknown and sent before)."""
    if op.status == OK:
        return bool(op.result.get("revision") == revision)
    if op.status == UNKNOWN:
        return op.call <= ref.first_seen.get(revision, math.inf)
    return False


def check_leases(history: History, ref: Reference) -> LeaseResult:
    """Every property of the module docstring."""
    result = LeaseResult()
    leases = {lr.lease_id: lr for lr in history.leases}
    revokes: dict[int, list[Operation]] = {}
    deletes: dict[str, list[Operation]] = {}
    for op in history.operations:
        if op.kind == "lease_revoke":
            revokes.setdefault(op.args["lease"], []).append(op)
        elif op.kind == "delete":
            deletes.setdefault(op.args["key"], []).append(op)

    # Revoked means gone, at the revoke's revision and after.
    acked = [op for ops in revokes.values() for op in ops if op.status == OK and ref.is_covered(op.result["revision"])]
    states = states_at(ref, (op.result["revision"] for op in acked))
    for op in acked:
        lease, rev = op.args["lease"], op.result["revision"]
        left = sorted(k for k, s in states[rev].items() if s.lease == lease)
        if left:
            result.violations.append(f"{op.describe()}: keys {left} still attached at revision {rev}")
        for later in sorted(r for r in ref.events if r > rev):
            for e in ref.events[later]:
                if e.type == "put" and e.lease == lease:
                    result.violations.append(
                        f"{op.describe()}: key {e.key!r} attached to the revoked lease at revision {later}"
                    )

    # Every deletion has a cause.
    current: dict[str, int] = {}
    for rev in sorted(ref.events):
        for e in ref.events[rev]:
            if e.type == "put":
                current[e.key] = e.lease
                continue
            lease = current.pop(e.key, 0)
            result.deletions += 1
            if any(_may_have_happened_by(op, rev, ref) for op in deletes.get(e.key, [])):
                continue
            if lease and any(_may_have_happened_by(op, rev, ref) for op in revokes.get(lease, [])):
                continue
            record = leases.get(lease)
            if lease and record is not None and (not record.keep_alive or record.lapsed):
                continue  # an expiring lease expired, or a keep-alive lapsed (clients cut off too long)
            if lease and record is not None:
                result.violations.append(
                    f"key {e.key!r} of kept-alive lease {lease:x} deleted at revision {rev} without a "
                    f"revoke: the lease expired while it was being renewed"
                )
            else:
                result.violations.append(
                    f"key {e.key!r} (lease {lease:x}) deleted at revision {rev} with no delete or revoke that "
                    f"could have done it"
                )

    # Kept alive means alive; expired means gone.
    for lr in history.leases:
        result.leases += 1
        revoked = any(op.status in (OK, UNKNOWN) for op in revokes.get(lr.lease_id, []))
        if lr.keep_alive and not revoked and not lr.lapsed:
            if lr.lost:
                result.violations.append(
                    f"lease {lr.lease_id:x} (TTL {lr.ttl}) was kept alive but reported lost at "
                    f"{lr.lost_at}: {lr.lost_reason}"
                )
            if lr.final_ttl is not None and lr.final_ttl <= 0:
                result.violations.append(
                    f"lease {lr.lease_id:x} (TTL {lr.ttl}) was kept alive but is gone after the run"
                )
        if not lr.keep_alive and lr.final_ttl is not None and lr.final_ttl > 0:
            result.violations.append(
                f"lease {lr.lease_id:x} (TTL {lr.ttl}) was not kept alive, yet it has {lr.final_ttl}s "
                f"left after the run"
            )
    final_keys = history.final.get("keys")
    if final_keys is not None:
        expired = {lr.lease_id for lr in history.leases if not lr.keep_alive}
        for key, lease in final_keys.items():
            if lease in expired:
                result.violations.append(f"key {key!r} of expired lease {lease:x} still exists after the run")
    return result
