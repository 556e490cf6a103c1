"""A distributed lock with a fencing token, on a session's lease (etcd's ``concurrency.Mutex``).

Example (runnable against ``flagstaff up`` or any etcd)::

    import asyncio
    from consensus.client import Client, op_put
    from consensus.client.recipes import Lock, Session

    async def main() -> None:
        async with Client(["127.0.0.1:2379"]) as client, Session(client, ttl=5) as session:
            async with Lock(session, "nightly-report") as lock:
                print("fencing token", lock.fencing_token)
                # only succeeds while we still hold the lock:
                await client.txn(compare=[lock.guard()], success=[op_put("/reports/last", "...")])

    asyncio.run(main())

The holder is the contender whose key under ``/locks/<name>/`` has the
lowest create revision; that revision is the **fencing token**: it grows with
every new holder, so a resource can refuse writes carrying an older token,
and :meth:`Lock.guard` is a txn compare that fails once the holder's key is
gone. If the holder dies (even ``kill -9``), its session lease expires
after its TTL, the core deletes its key and the next contender acquires.
"""

from __future__ import annotations

import asyncio

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client.kv import compare_create
from consensus.client.recipes.queue import enqueue, wait_for_turn
from consensus.client.recipes.session import Session, SessionExpiredError

LOCKS_PREFIX = "/locks/"


class LockLostError(SessionExpiredError):
    """The lock was lost (its session expired) while waiting for it or holding it."""


class Lock:
    """The lock ``name`` (keys under ``/locks/<name>/``) for one session.

    Attributes once acquired: ``key`` and ``fencing_token`` (the create revision of ``key``).
    """

    def __init__(self, session: Session, name: str, *, prefix: str = LOCKS_PREFIX) -> None:
        if not name or "/" in name:
            raise ValueError("a lock name is non-empty and has no '/'")
        self.session = session
        self.name = name
        self.prefix = f"{prefix}{name}/".encode()
        self.key: bytes | None = None
        self.fencing_token = 0

    async def acquire(self, timeout: float | None = None) -> int:
        """Wait for the lock (at most ``timeout`` seconds); the fencing token.

        On timeout (``TimeoutError``) or cancellation the place in the queue is given up.
        """
        self.session.check()
        key, revision = await enqueue(self.session, self.prefix, b"")
        try:
            await asyncio.wait_for(
                wait_for_turn(self.session.client, self.prefix, revision, key), timeout)
        except LookupError as exc:
            raise LockLostError(str(exc)) from exc
        except BaseException:
            await self.session.client.delete_range(key)
            raise
        self.key, self.fencing_token = key, revision
        return revision

    def guard(self) -> pb.Compare:
        """A txn compare that holds only while this lock is still held by us."""
        if self.key is None:
            raise RuntimeError("the lock is not held")
        return compare_create(self.key, "=", self.fencing_token)

    async def is_held(self) -> bool:
        """Whether our key is still the holder's (a linearizable read)."""
        if self.key is None:
            return False
        kv = await self.session.client.get(self.key)
        return kv is not None and int(kv.create_revision) == self.fencing_token

    async def release(self) -> None:
        """Give the lock up (the next contender acquires it)."""
        key, self.key = self.key, None
        if key is not None:
            await self.session.client.delete_range(key)

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()
