"""The cluster page: members, leader, term, indexes, sizes, alarms, health; membership and backups.

Staff may look; only superusers may add or remove a member or take a backup,
and membership changes need the confirmation box ticked. Thin views over
``flags.cluster``.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, user_passes_test
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from flags import cluster
from flags.core import Actor
from flags.exceptions import FlagstaffError


def _staff(user: object) -> bool:
    return bool(getattr(user, "is_active", False) and getattr(user, "is_staff", False))


def _require_superuser(request: HttpRequest) -> None:
    if not getattr(request.user, "is_superuser", False):
        raise PermissionDenied("only superusers may change the cluster or take backups")


def _back() -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("cluster"))


@login_required
@user_passes_test(_staff)
@require_GET
def cluster_page(request: HttpRequest) -> HttpResponse:
    """The cluster's members and their state, alarms, and the backups in the backup directory."""
    error = ""
    view = None
    try:
        view = cluster.read_cluster()
    except FlagstaffError as exc:
        error = str(exc)
    return render(request, "cluster/cluster.html", {
        "cluster": view, "error": error,
        "backups": cluster.list_backups(settings.FLAGSTAFF_BACKUP_DIR)[:50],
        "backup_dir": settings.FLAGSTAFF_BACKUP_DIR,
        "backup_interval": settings.FLAGSTAFF_BACKUP_INTERVAL_SECONDS,
        "backup_keep": settings.FLAGSTAFF_BACKUP_KEEP,
        "can_change": request.user.is_superuser,
    })


@login_required
@require_POST
def member_add(request: HttpRequest) -> HttpResponse:
    """Add a member (or learner) by its peer URLs, after the confirmation box."""
    _require_superuser(request)
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the confirmation box to change the cluster's membership.")
        return _back()
    urls = request.POST.get("peer_urls", "").replace(",", " ").split()
    try:
        member_id = cluster.do_add_member(urls, is_learner=request.POST.get("learner") == "yes",
                                          actor=Actor.for_user(request.user))
    except FlagstaffError as exc:
        messages.error(request, f"Could not add the member: {exc}")
    else:
        messages.success(request, f"Added member {member_id:016x}: start it with "
                                  "--initial-cluster-state existing.")
    return _back()


@login_required
@require_POST
def member_remove(request: HttpRequest, member: str) -> HttpResponse:
    """Remove a member (hex id), after the confirmation box."""
    _require_superuser(request)
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the confirmation box to change the cluster's membership.")
        return _back()
    try:
        cluster.do_remove_member(int(member, 16), actor=Actor.for_user(request.user))
    except ValueError:
        messages.error(request, f"{member!r} is not a member id")
    except FlagstaffError as exc:
        messages.error(request, f"Could not remove the member: {exc}")
    else:
        messages.warning(request, f"Removed member {member}.")
    return _back()


@login_required
@require_POST
def backup_now(request: HttpRequest) -> HttpResponse:
    """Take a backup into the backup directory now."""
    _require_superuser(request)
    try:
        taken = cluster.do_backup_now(settings.FLAGSTAFF_BACKUP_DIR, actor=Actor.for_user(request.user))
    except (FlagstaffError, OSError) as exc:
        messages.error(request, f"Backup failed: {exc}")
    else:
        messages.success(request, f"Backup {taken.name} written (revision {taken.revision}, "
                                  f"{taken.size} bytes).")
    return _back()
