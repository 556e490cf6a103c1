"""The flags app's HTML pages (the editor UI builds on these templates)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from flags.access import access_projects
from flags.exceptions import FlagstaffError


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The start page: the projects the user may see."""
    error = None
    try:
        projects = access_projects(request.user)
    except FlagstaffError as exc:
        projects, error = [], str(exc)
    return render(request, "flags/home.html", {"projects": projects, "error": error})
