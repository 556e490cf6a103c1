"""``{% flag_schedules %}``: the flag page's section of scheduled changes and progressive rollouts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import template

from flags import access, schedules
from flags.exceptions import FlagstaffError
from flags.permissions import Perm, has_permission

register = template.Library()


def _when(value: object) -> str:
    if not isinstance(value, int | float):
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.inclusion_tag("flags/_schedules.html", takes_context=True)
def flag_schedules(context: template.Context, project: str, environment: str, flag: str) -> dict[str, Any]:
    """The schedules of ``flag`` in ``environment``, newest first, with forms to add and steer them."""
    request = context["request"]
    error = ""
    rows: list[dict[str, Any]] = []
    try:
        state = access.access_flag(request.user, project, environment, flag)
        for schedule in reversed(schedules.list_schedules(project, environment, flag)):
            doc = schedule.document
            rows.append({
                "schedule": schedule, "doc": doc, "next_at": _when(doc.get("next_at")),
                "steps": ", ".join(f"{s:g}%" for s in schedule.steps),
                "change": ", ".join(f"{k}={v}" for k, v in doc.get("change", {}).items()
                                    if k != "document") or ("document" if "change" in doc else ""),
                "history": doc.get("history", [])[-5:],
            })
        boolean = schedules.current_percentage(state.document) is not None
    except FlagstaffError as exc:
        error, boolean = str(exc), False
    return {
        "request": request, "csrf_token": context.get("csrf_token"), "project": project,
        "environment": environment, "flag": flag, "rows": rows, "error": error,
        "boolean": boolean,
        "can_write": has_permission(request.user, Perm.WRITE,
                                    f"/flags/{project}/{environment}/{flag}"),
    }
