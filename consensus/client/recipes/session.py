"""A session: one lease kept alive in the background, to which recipes attach their keys."""

from __future__ import annotations

import asyncio
import contextlib

from consensus.client.client import Client
from consensus.client.errors import EtcdError
from consensus.client.lease import KeepAlive


class SessionExpiredError(Exception):
    """The session's lease is gone: every lock or leadership attached to it is lost."""


class Session:
    """A lease of ``ttl`` seconds renewed every TTL/3 until :meth:`close` (which revokes it).

    ``async with Session(client, ttl=10) as session:``. If the process dies,
    renewals stop and the core deletes the session's keys ``ttl`` seconds
    later. ``lost`` turns true (and :meth:`wait_lost` returns) if the lease
    expires while the session is open (e.g. the process was paused too long).
    """

    def __init__(self, client: Client, *, ttl: int = 10, lease_id: int = 0) -> None:
        self.client = client
        self.ttl = ttl
        self.lease_id = lease_id
        self._keep_alive: KeepAlive | None = None
        self._lost = asyncio.Event()

    async def open(self) -> Session:
        """Grant the lease (unless one was given) and start renewing it."""
        if not self.lease_id:
            granted = await self.client.lease_grant(self.ttl)
            self.lease_id = int(granted.ID)
        self._keep_alive = self.client.keep_alive(self.lease_id,
                                                  on_lost=lambda _error: self._lost.set())
        return self

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    async def wait_lost(self) -> None:
        await self._lost.wait()

    def check(self) -> None:
        """Raise :class:`SessionExpiredError` if the lease is known to be gone."""
        if self.lost:
            raise SessionExpiredError(f"session lease {self.lease_id:x} expired")

    async def close(self, *, revoke: bool = True) -> None:
        """Stop renewing and (by default) revoke the lease, deleting every key attached to it."""
        if self._keep_alive is not None:
            await self._keep_alive.close()
            self._keep_alive = None
        if revoke and self.lease_id and not self.lost:
            with contextlib.suppress(EtcdError):
                await self.client.lease_revoke(self.lease_id)

    async def __aenter__(self) -> Session:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
