"""Coordination recipes on the core (leases plus compare-and-swap), after etcd's ``concurrency`` package.

- :class:`Session` -- a lease kept alive for as long as the process lives; what
  the recipes attach their keys to, so a process that dies (even ``kill -9``)
  lets go once the lease's TTL runs out.
- :class:`Lock` -- a distributed mutex whose holder gets a **fencing token**
  (the revision that created its queue key): guard writes with
  :meth:`Lock.guard` so a holder that lost the lock (paused past its TTL)
  cannot write.
- :class:`Election` -- campaign, proclaim, resign, and observe the leader.

Both queue contenders by create revision under a prefix (``/locks/<name>/``,
``/election/<name>/``): each waits only for the key just before its own to
go, so a release wakes one waiter. They work the same against etcd. See
``docs/discovery.md`` for runnable examples.
"""

from consensus.client.recipes.election import Election, Leader
from consensus.client.recipes.lock import Lock, LockLostError
from consensus.client.recipes.session import Session, SessionExpiredError

__all__ = ["Election", "Leader", "Lock", "LockLostError", "Session", "SessionExpiredError"]
