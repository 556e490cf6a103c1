"""The flag page's forms for scheduled changes and progressive rollouts (``flags.schedules``).

Thin views: permission and the flag through ``flags.access``, the change
through one ``do_*`` call attributed to the logged-in user, then back to the
flag page with a message. The section itself is the ``{% flag_schedules %}``
tag (``flags.templatetags.schedules``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from flags import access, schedules
from flags.core import Actor
from flags.exceptions import FlagstaffError, InvalidInput, NotFound
from flags.permissions import Perm

STEERS = {
    "pause": schedules.do_pause_schedule,
    "resume": schedules.do_resume_schedule,
    "cancel": schedules.do_cancel_schedule,
    "rollback": schedules.do_rollback_schedule,
}


def _back(project: str, environment: str, flag: str) -> HttpResponseRedirect:
    return HttpResponseRedirect(f"{reverse('flag-detail', args=[project, flag])}?env={environment}#schedules")


def _number(request: HttpRequest, name: str) -> float:
    try:
        return float(request.POST.get(name, ""))
    except ValueError:
        raise InvalidInput("must be a number", field=name) from None


def _form_data(request: HttpRequest) -> dict[str, Any]:
    """The REST body (``do_create_schedule``'s ``data``) a schedule form stands for."""
    kind = request.POST.get("kind", "")
    if kind == "once":
        raw = request.POST.get("at", "")
        try:
            at = datetime.fromisoformat(raw).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise InvalidInput("must be a date and time", field="at") from None
        change: dict[str, Any]
        what = request.POST.get("change", "")
        if what == "percentage":
            change = {"percentage": _number(request, "percentage")}
        else:
            change = {"on": what == "on"}
        return {"kind": "once", "at": at, "change": change}
    data: dict[str, Any] = {
        "kind": kind, "strategy": request.POST.get("strategy", "linear"),
        "step_percentage": _number(request, "step_percentage"),
        "growth_factor": _number(request, "growth_factor"),
        "bake_seconds": _number(request, "bake_seconds"),
    }
    if request.POST.get("health_type"):
        data["health"] = {"type": request.POST["health_type"], "url": request.POST.get("health_url", ""),
                          "max": _number(request, "health_max")}
    return data


@login_required
@require_POST
def schedule_create(request: HttpRequest, project: str, environment: str, flag: str) -> HttpResponse:
    """Store a scheduled change or start a progressive rollout from the flag page's forms."""
    try:
        state = access.access_flag(request.user, project, environment, flag, perm=Perm.WRITE)
    except NotFound as exc:
        raise Http404(str(exc)) from None
    try:
        schedule = schedules.do_create_schedule(state, _form_data(request),
                                                actor=Actor.for_user(request.user))
    except FlagstaffError as exc:
        messages.error(request, f"Could not schedule: {exc}")
    else:
        messages.success(request, f"Scheduled {schedule.kind} change {schedule.id}.")
    return _back(project, environment, flag)


@login_required
@require_POST
def schedule_steer(request: HttpRequest, project: str, environment: str, flag: str, schedule: str,
                   action: str) -> HttpResponse:
    """Pause, resume, cancel or roll back a schedule."""
    steer = STEERS.get(action)
    try:
        if steer is None:
            raise NotFound(f"no schedule action {action!r}")
        access.access_flag(request.user, project, environment, flag, perm=Perm.WRITE)
        record = schedules.read_schedule(project, environment, flag, schedule)
    except NotFound as exc:
        raise Http404(str(exc)) from None
    try:
        updated = steer(record, actor=Actor.for_user(request.user))
    except FlagstaffError as exc:
        messages.error(request, f"Could not {action} the schedule: {exc}")
    else:
        messages.success(request, f"Schedule {schedule} is now {updated.state}.")
    return _back(project, environment, flag)
