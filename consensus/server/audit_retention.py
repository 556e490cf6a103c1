"""Audit trail retention: the leader proposes purges of records older than ``--audit-retention``.

``--audit-retention`` is a Go duration (``720h``, ``30m``) or a whole number
of hours; ``0`` (the default) keeps every record forever. While this member
leads it checks every tenth of the retention (between 0.2 s and a minute)
whether the oldest retained record is older than the retention, and if so
proposes ``Op.AUDIT_PURGE`` with the cutoff (its clock minus the retention)
*in the entry*: apply drops exactly the records timed before that cutoff on
every member (deterministic), and never a younger one. Nothing else removes
audit records: there is no RPC that deletes or edits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from consensus.api.gen.flagstaff.audit.v1 import audit_pb2
from consensus.server.auto_compaction import HOUR, parse_go_duration
from consensus.server.etcd_state import EtcdStateMachine
from consensus.server.internal_request import InternalRequest, Op

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.2
MAX_INTERVAL = 60.0


def parse_retention(text: str) -> float:
    """Seconds of ``--audit-retention`` (0: keep forever); ValueError naming the flag."""
    value = text.strip()
    try:
        seconds = int(value) * HOUR if value.isdigit() else parse_go_duration(value)
    except ValueError as exc:
        raise ValueError(f"error parsing --audit-retention: {exc}") from None
    if seconds < 0:
        raise ValueError("--audit-retention must not be negative")
    return seconds


class _Member(Protocol):
    @property
    def is_leader(self) -> bool: ...

    async def propose(self, data: bytes, timeout: float | None = None) -> object: ...


class AuditRetention:
    """The background purge loop of one member (acts only while it leads)."""

    def __init__(
        self,
        retention: float,
        member: _Member,
        fsm: EtcdStateMachine,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.retention = retention
        self.member = member
        self.fsm = fsm
        self._clock = clock
        self._sleep = sleep
        self.interval = min(max(retention / 10, MIN_INTERVAL), MAX_INTERVAL)
        self.purged = 0
        """Records this member's proposals removed (diagnostics)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="audit-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        while True:
            await self._sleep(self.interval)
            try:
                await self.purge_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("audit retention purge failed: %s", exc)

    async def purge_once(self) -> int:
        """Propose a purge if this member leads and some record is past the retention."""
        if not self.member.is_leader:
            return 0
        cutoff_ms = int((self._clock() - self.retention) * 1000)
        if not self.fsm.audit.has_older_than(cutoff_ms):
            return 0
        body = audit_pb2.PurgeRequest(cutoff_ms=cutoff_ms).SerializeToString()
        result = await self.member.propose(
            InternalRequest(Op.AUDIT_PURGE, body, int(self._clock() * 1000)).encode()
        )
        removed = result if isinstance(result, int) else 0
        self.purged += removed
        if removed:
            log.info("audit retention: purged %d records older than %d ms", removed, cutoff_ms)
        return removed
