"""The background work beside a running member's etcd API: publish and auto compaction.

``flagstaff node`` starts these once the member and its gRPC server run and
stops them when the member stops:

* the publish of this member's ``--name`` and ``--advertise-client-urls``
  through Raft (:func:`consensus.server.cluster_service.publish`), retried
  until it succeeds;
* the auto compactor for ``--auto-compaction-mode/--auto-compaction-retention``
  (:mod:`consensus.server.auto_compaction`), when enabled;
* the audit trail's retention purge for ``--audit-retention``
  (:mod:`consensus.server.audit_retention`), when set.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from consensus.server import auto_compaction
from consensus.server.audit_retention import AuditRetention, parse_retention
from consensus.server.cluster_service import publish
from consensus.server.config import MemberConfig
from consensus.server.etcd_server import EtcdServer

if TYPE_CHECKING:
    from consensus.server.member import Member


class MemberTasks:
    """The running background tasks; :meth:`stop` ends them all."""

    def __init__(
        self,
        publisher: asyncio.Task[None],
        compactor: auto_compaction.AutoCompactor | None,
        audit_retention: AuditRetention | None = None,
    ) -> None:
        self.publisher = publisher
        self.compactor = compactor
        self.audit_retention = audit_retention

    async def stop(self) -> None:
        self.publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.publisher
        if self.compactor is not None:
            await self.compactor.stop()
        if self.audit_retention is not None:
            await self.audit_retention.stop()


def start_member_tasks(member: Member, server: EtcdServer, config: MemberConfig) -> MemberTasks:
    """Start publish and (if configured) auto compaction for ``member``."""
    publisher = asyncio.get_running_loop().create_task(
        publish(member, config.name, config.advertise_client_urls, config.request_timeout),
        name="publish",
    )
    policy = auto_compaction.parse_policy(
        config.auto_compaction_mode, config.auto_compaction_retention
    )
    compactor = auto_compaction.start(policy, member, server) if policy is not None else None
    retention = parse_retention(config.audit_retention)
    purger = None
    if retention > 0:
        purger = AuditRetention(retention, member, server.fsm)
        purger.start()
    return MemberTasks(publisher, compactor, purger)
