"""Leader election on a session's lease (etcd's ``concurrency.Election``).

Example (runnable against ``flagstaff up`` or any etcd)::

    import asyncio
    from consensus.client import Client
    from consensus.client.recipes import Election, Session

    async def main() -> None:
        async with Client(["127.0.0.1:2379"]) as client, Session(client, ttl=5) as session:
            election = Election(session, "scheduler")
            await election.campaign(b"worker-1")   # returns once we lead
            print("leading since revision", election.revision)
            ...                                     # do the leader's work
            await election.resign()

    asyncio.run(main())

Anyone (with or without a session) can follow the leader::

    async for leader in Election.observe(client, "scheduler"):
        print(leader.value if leader else "no leader")

Candidates queue under ``/election/<name>/`` by create revision; the oldest
key is the leader, its value the leader's proclamation. A leader that dies
(even ``kill -9``) stops renewing its session: the core deletes its key after
the TTL and the next candidate leads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from consensus.client.client import Client
from consensus.client.keys import KeyLike, to_bytes
from consensus.client.kv import compare_create, op_put
from consensus.client.recipes.queue import enqueue, first, wait_for_turn
from consensus.client.recipes.session import Session, SessionExpiredError

ELECTION_PREFIX = "/election/"


@dataclass(frozen=True, slots=True)
class Leader:
    """The current leader: its queue key, proclaimed value and the revision it was elected at."""

    key: bytes
    value: bytes
    revision: int


def _prefix(name: str, prefix: str) -> bytes:
    if not name or "/" in name:
        raise ValueError("an election name is non-empty and has no '/'")
    return f"{prefix}{name}/".encode()


class Election:
    """The election ``name`` as seen by one session's candidate."""

    def __init__(self, session: Session, name: str, *, prefix: str = ELECTION_PREFIX) -> None:
        self.session = session
        self.name = name
        self.prefix = _prefix(name, prefix)
        self.key: bytes | None = None
        self.revision = 0

    async def campaign(self, value: KeyLike, timeout: float | None = None) -> None:
        """Stand with ``value`` and return once leading (``TimeoutError``: gave up, withdrawn)."""
        self.session.check()
        key, revision = await enqueue(self.session, self.prefix, to_bytes(value))
        try:
            await asyncio.wait_for(
                wait_for_turn(self.session.client, self.prefix, revision, key), timeout)
        except LookupError as exc:
            raise SessionExpiredError(str(exc)) from exc
        except BaseException:
            await self.session.client.delete_range(key)
            raise
        self.key, self.revision = key, revision
        # Enqueued earlier with another value (same session): say the new one.
        await self.proclaim(value)

    async def proclaim(self, value: KeyLike) -> None:
        """Change the leader's value (only while still leading; raises SessionExpiredError)."""
        if self.key is None:
            raise RuntimeError("not leading: campaign first")
        response = await self.session.client.txn(
            compare=[compare_create(self.key, "=", self.revision)],
            success=[op_put(self.key, value, lease=self.session.lease_id)],
        )
        if not response.succeeded:
            self.key = None
            raise SessionExpiredError("no longer the leader (the session's key is gone)")

    async def resign(self) -> None:
        """Stop leading (the next candidate leads)."""
        key, self.key = self.key, None
        if key is not None:
            await self.session.client.delete_range(key)

    async def leader(self) -> Leader | None:
        return await Election.current(self.session.client, self.name)

    @staticmethod
    async def current(client: Client, name: str, *, prefix: str = ELECTION_PREFIX) -> Leader | None:
        """The leader of ``name`` now, or None."""
        kv, _ = await first(client, _prefix(name, prefix))
        if kv is None:
            return None
        return Leader(bytes(kv.key), bytes(kv.value), int(kv.create_revision))

    @staticmethod
    async def observe(client: Client, name: str, *,
                      prefix: str = ELECTION_PREFIX) -> AsyncIterator[Leader | None]:
        """The leader now, then each time it changes (a new leader or a new value); forever."""
        queue = _prefix(name, prefix)
        kv, revision = await first(client, queue)
        last = None if kv is None else Leader(bytes(kv.key), bytes(kv.value),
                                              int(kv.create_revision))
        yield last
        async with client.watch_prefix(queue, start_revision=revision + 1) as watch:
            async for _batch in watch:
                kv, _ = await first(client, queue)
                now = None if kv is None else Leader(bytes(kv.key), bytes(kv.value),
                                                     int(kv.create_revision))
                if now != last:
                    last = now
                    yield now
