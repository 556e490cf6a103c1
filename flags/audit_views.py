"""The audit log's HTML pages: the filtered list, one record's before/after diff, CSV export.

Thin views over ``flags.audit`` (which reads the core's trail and shows each
person only the keys they may read). Filters come from the query string:
``actor``, ``key`` (a key, or a prefix ending in ``/``), ``flag``
(``<project>/<flag>``: one flag in every environment), ``action``, ``source``,
``since`` and ``until`` (ISO dates or date-times, UTC). Read-only: nothing
here (or anywhere) edits or deletes a record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from flags.audit import (
    KV_ACTIONS,
    PAGE_SIZE,
    PLATFORM_ACTIONS,
    AuditFilters,
    access_audit_page,
    access_audit_record,
    csv_rows,
)
from flags.core import SOURCES
from flags.exceptions import FlagstaffError, InvalidInput, NotFound

CSV_MAX_ROWS = 10_000
"""At most this many records in one CSV export (narrow the filters for more)."""


def parse_time(text: str, field: str) -> datetime | None:
    """An ISO date or date-time (naive means UTC), or None when empty; InvalidInput if malformed."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{field}: not an ISO date or date-time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def filters_from(params: Any) -> AuditFilters:
    """The filters of a query string (``request.GET`` or DRF's ``query_params``)."""
    return AuditFilters(
        key=params.get("key", "").strip(),
        flag=params.get("flag", "").strip(),
        actor=params.get("actor", "").strip(),
        action=params.get("action", "").strip(),
        source=params.get("source", "").strip(),
        since=parse_time(params.get("since", ""), "since"),
        until=parse_time(params.get("until", ""), "until"),
    )


@login_required
@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    """The review page: filters, records newest first, a diff per change, paging, CSV link."""
    context: dict[str, Any] = {
        "params": request.GET,
        "actions": (*KV_ACTIONS, *PLATFORM_ACTIONS),
        "sources": (*SOURCES, "expiry"),
        "query": request.GET.urlencode(),
    }
    status = 200
    try:
        filters = filters_from(request.GET)
        page = access_audit_page(request.user, filters, page_token=request.GET.get("page", ""),
                                 limit=PAGE_SIZE)
        context["entries"] = page.entries
        if page.next_token:
            older = request.GET.copy()
            older["page"] = page.next_token
            context["older"] = older.urlencode()
        export = request.GET.copy()
        export.pop("page", None)
        context["export_query"] = export.urlencode()
    except InvalidInput as exc:
        context["error"] = str(exc)
        status = 400
    except FlagstaffError as exc:
        context["error"] = str(exc)
        status = 503
    return render(request, "audit/list.html", context, status=status)


@login_required
@require_GET
def audit_detail(request: HttpRequest, record_id: int) -> HttpResponse:
    """One record: who, when, why, and a before/after diff per changed key."""
    try:
        entry = access_audit_record(request.user, record_id)
    except NotFound as exc:
        raise Http404(str(exc)) from None
    return render(request, "audit/detail.html", {"entry": entry})


@login_required
@require_GET
def audit_export(request: HttpRequest) -> HttpResponse:
    """The filtered records as CSV (one row per changed key), newest first."""
    try:
        filters = filters_from(request.GET)
    except InvalidInput as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")

    def entries() -> Any:
        token, count = "", 0
        while True:
            page = access_audit_page(request.user, filters, page_token=token, limit=500)
            for entry in page.entries:
                yield entry
                count += 1
                if count >= CSV_MAX_ROWS:
                    return
            token = page.next_token
            if not token:
                return

    response = StreamingHttpResponse(csv_rows(entries()), content_type="text/csv; charset=utf-8")
    stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="flagstaff-audit-{stamp}.csv"'
    return response
