"""Reading the service catalog for people: the services page and its live updates.

``access_*`` helpers answer only what the principal may read: an instance is
visible when ``flags.permissions.has_permission(principal, READ,
"/services/<service>/")``. "Last heartbeat" is not stored (renewals are not
writes): it is derived from the instance's lease, ``granted TTL - remaining
TTL`` seconds ago (to the second).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from consensus.client import Client, EtcdError
from discovery.instances import Instance, parse_key, service_prefix
from flags.core import core
from flags.permissions import Perm, permission_checker

MAX_HEARTBEAT_LOOKUPS = 500
"""Lease look-ups per heartbeat round of one page (the rest show no heartbeat)."""


@dataclass(frozen=True, slots=True)
class Catalog:
    """The visible instances (sorted by service, then id) and the revision they were read at."""

    instances: list[Instance]
    revision: int


class Visibility:
    """Which services a principal may read (its grants loaded once; sync: uses the database)."""

    def __init__(self, principal: Any) -> None:
        self._checker = permission_checker(principal)
        self._answers: dict[str, bool] = {}

    def may_read(self, service: str) -> bool:
        if service not in self._answers:
            self._answers[service] = self._checker.allows(Perm.READ, service_prefix(service))
        return self._answers[service]


def instances_in(kvs: Iterable[Any]) -> list[Instance]:
    """The well-formed instances among core ``KeyValue`` s (others are skipped)."""
    found = []
    for kv in kvs:
        if parse_key(bytes(kv.key).decode("utf-8", "replace")) is None:
            continue
        try:
            found.append(Instance.from_kv(kv))
        except (ValueError, KeyError, TypeError):
            continue
    return found


async def aread_catalog(client: Client) -> Catalog:
    """Every instance (unfiltered) and the revision: the live consumer's snapshot."""
    response = await client.get_prefix(service_prefix(), sort_order="ascend", sort_target="key")
    return Catalog(instances_in(response.kvs), int(response.header.revision))


def access_catalog(principal: Any) -> Catalog:
    """The instances ``principal`` may see (sync: views)."""

    async def read() -> Catalog:
        return await aread_catalog(core().client())

    catalog = core().run(read())
    visible = Visibility(principal)
    return Catalog([i for i in catalog.instances if visible.may_read(i.service)], catalog.revision)


async def alast_heartbeats(client: Client, instances: Iterable[Instance]) -> dict[str, float]:
    """``{instance key: unix time of its last renewal}`` from the instances' leases."""
    now = time.time()
    beats: dict[str, float] = {}
    for instance in list(instances)[:MAX_HEARTBEAT_LOOKUPS]:
        if not instance.lease_id:
            continue
        try:
            ttl = await client.lease_time_to_live(instance.lease_id)
        except EtcdError:
            continue
        if ttl.TTL >= 0:
            beats[instance.key] = now - max(0, int(ttl.grantedTTL) - int(ttl.TTL))
    return beats


def last_heartbeats(instances: Iterable[Instance]) -> dict[str, float]:
    """:func:`alast_heartbeats` for sync callers."""
    listed = list(instances)

    async def read() -> dict[str, float]:
        return await alast_heartbeats(core().client(), listed)

    return core().run(read())
