"""The services page: every visible instance, its health, tags, metadata and heartbeats, live."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from discovery.catalog import access_catalog, last_heartbeats
from flags.exceptions import FlagstaffError


def _when(seconds: float) -> str:
    if not seconds:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@login_required
@require_GET
def services(request: HttpRequest) -> HttpResponse:
    """``/services/``: the catalog grouped by service (the page then follows ``/ws/v1/services/``)."""
    error = ""
    rows: list[dict[str, Any]] = []
    revision = 0
    try:
        catalog = access_catalog(request.user)
        beats = last_heartbeats(catalog.instances)
        revision = catalog.revision
        for instance in catalog.instances:
            row = instance.to_json()
            row["key"] = instance.key
            row["registered"] = _when(instance.registered_at)
            row["heartbeat"] = _when(beats.get(instance.key, 0.0))
            row["metadata_items"] = sorted(instance.metadata.items())
            rows.append(row)
    except FlagstaffError as exc:
        error = str(exc)
    return render(request, "discovery/services.html",
                  {"rows": rows, "revision": revision, "error": error})
