"""Celery tasks of the flags app: core health, scheduled changes and rollouts, webhooks, backups."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from flags.core import core
from flags.exceptions import FlagstaffError

logger = logging.getLogger(__name__)


@shared_task(name="flags.tasks.check_core_health")
def check_core_health() -> dict[str, Any]:
    """Ask the core for its status (beat runs this every minute); logs and returns what it saw."""
    try:
        status = core().status()
    except FlagstaffError as exc:
        logger.warning("core health: %s", exc)
        return {"ok": False, "error": str(exc)}
    result = {"ok": True, "revision": int(status.header.revision), "leader": int(status.leader)}
    logger.info("core health: %s", result)
    return result


@shared_task(name="flags.tasks.run_schedules")
def run_schedules(prefix: str = "/schedules/") -> list[str]:
    """Carry out the due scheduled changes and rollout steps (beat ticks this); what each did."""
    from flags.schedules import run_due_schedules

    return [f"{o.schedule.core_key if o.schedule else '?'}: {o.what}"
            for o in run_due_schedules(prefix=prefix)]


@shared_task(name="flags.tasks.backup_core")
def backup_core() -> dict[str, Any]:
    """Take a scheduled backup into FLAGSTAFF_BACKUP_DIR and prune to FLAGSTAFF_BACKUP_KEEP."""
    from django.conf import settings

    from flags.cluster import SCHEDULED_BACKUPS, do_backup_now, prune_backups

    taken = do_backup_now(settings.FLAGSTAFF_BACKUP_DIR, actor=SCHEDULED_BACKUPS)
    removed = prune_backups(settings.FLAGSTAFF_BACKUP_DIR, settings.FLAGSTAFF_BACKUP_KEEP)
    return {"path": str(taken.path), "revision": taken.revision, "pruned": [str(p) for p in removed]}


@shared_task(name="flags.tasks.run_webhooks")
def run_webhooks() -> dict[str, int]:
    """Turn new core changes into webhook deliveries and attempt the due ones (beat ticks this)."""
    from flags.webhooks import run_webhooks as tick

    return tick()
