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
