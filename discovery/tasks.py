"""Celery tasks running the instances' health checks.

Beat runs :func:`schedule_health_checks` every second (``CHECK_TICK_SECONDS``);
it lists the catalog and sends one :func:`run_health_check` task per instance
whose check is due, so the checks spread over every worker. Each instance is
due once per interval at a phase derived from its key, so checks of many
instances do not all land on the same second. A check's result is written
to the instance's document only when its health or output changed (a
compare-and-swap on the key, keeping its lease), so steady instances cost no
writes. An instance critical for longer than its check's
``deregister_after`` is deregistered: its key deleted and its lease revoked
(Consul's ``deregister_critical_service_after``). TTL-only instances have no
check: their lease alone decides.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from typing import Any

from celery import shared_task

from consensus.client import EtcdError, compare_mod, op_delete, op_put
from discovery.checks import probe
from discovery.instances import Health, Instance, parse_key, service_prefix
from flags.core import Actor, core
from flags.exceptions import FlagstaffError

log = logging.getLogger(__name__)

CHECK_TICK_SECONDS = 1.0
"""How often beat runs :func:`schedule_health_checks` (the settings' beat schedule says the same)."""
ACTOR = Actor.system("health-checks")


def is_due(key: str, interval: float, now: float, tick: float = CHECK_TICK_SECONDS) -> bool:
    """Whether ``key``'s check (every ``interval`` s) falls in the tick ``(now - tick, now]``."""
    phase = (zlib.crc32(key.encode()) % 1000) / 1000.0 * interval
    return math.floor((now - phase) / interval) != math.floor((now - tick - phase) / interval)


def _read_instances(prefix: str) -> list[Instance]:
    async def read() -> list[Any]:
        response = await core().client().get_prefix(prefix)
        return list(response.kvs)

    instances = []
    for kv in core().run(read()):
        if parse_key(bytes(kv.key).decode("utf-8", "replace")) is None:
            continue
        try:
            instances.append(Instance.from_kv(kv))
        except (ValueError, KeyError, TypeError):
            continue
    return instances


def _read_instance(key: str) -> Instance | None:
    async def read() -> Any:
        return await core().client().get(key)

    kv = core().run(read())
    if kv is None:
        return None
    try:
        return Instance.from_kv(kv)
    except (ValueError, KeyError, TypeError):
        return None


@shared_task(name="discovery.tasks.schedule_health_checks", ignore_result=True)
def schedule_health_checks() -> int:
    """Send a :func:`run_health_check` task for every instance whose check is due; how many."""
    now = time.time()
    try:
        instances = _read_instances(service_prefix())
    except (FlagstaffError, EtcdError) as exc:
        log.warning("health checks: cannot list instances: %s", exc)
        return 0
    sent = 0
    for instance in instances:
        if instance.check is not None and is_due(instance.key, instance.check.interval, now):
            run_health_check.delay(instance.key)
            sent += 1
    return sent


@shared_task(name="discovery.tasks.run_health_check", ignore_result=True)
def run_health_check(key: str) -> str:
    """Check one instance and record the result; what happened (``passing``, ``critical``,
    ``unchanged``, ``deregistered``, ``gone``)."""
    instance = _read_instance(key)
    if instance is None or instance.check is None:
        return "gone"
    health, output = probe(instance.check)
    return record_result(instance, health, output, now=time.time())


def record_result(instance: Instance, health: Health, output: str, *, now: float) -> str:
    """Write a check's result to ``instance`` (read at ``instance.mod_revision``); what happened."""
    gateway = core()
    updated = instance.with_health(health, output, now)
    check = instance.check
    compare = [compare_mod(instance.key, "=", instance.mod_revision)]
    if (health == Health.CRITICAL and check is not None and check.deregister_after > 0
            and now - updated.critical_since >= check.deregister_after):
        gateway.commit(compare, [op_delete(instance.key)],
                       actor=ACTOR.with_reason(
                           f"critical for more than {check.deregister_after:g}s: {output}"),
                       expect={instance.key: None})
        if instance.lease_id:
            _revoke(instance.lease_id)
        log.info("deregistered %s: critical since %.0f", instance.key, updated.critical_since)
        return "deregistered"
    if health == instance.health and updated.health_output == instance.health_output:
        return "unchanged"
    document = updated.document()
    response = gateway.commit(compare, [op_put(instance.key, document, ignore_lease=True)],
                              actor=ACTOR.with_reason(output), expect={instance.key: document})
    if not response.succeeded:
        return "unchanged"  # the instance changed (or went) meanwhile; the next tick checks again
    return str(health)


def _revoke(lease_id: int) -> None:
    async def revoke() -> None:
        await core().client().lease_revoke(lease_id)

    try:
        core().run(revoke())
    except Exception as exc:  # the key is gone already; an expired lease is fine
        log.info("revoking lease %x: %s", lease_id, exc)
