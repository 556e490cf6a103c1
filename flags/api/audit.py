"""The audit log over HTTP: ``GET /api/v1/audit/`` (pages, filters) and a server-sent-events stream.

* ``/api/v1/audit/`` -- DRF, documented in the OpenAPI schema: the records the
  caller may see, newest first, ``limit`` per page (default 50, at most 500)
  and a ``next`` URL carrying an opaque ``page`` token; filters ``actor``,
  ``key`` (a key or a prefix ending in ``/``), ``flag`` (``project/flag``),
  ``action``, ``source``, ``since``, ``until`` (ISO 8601; naive is UTC).
* ``/api/v1/audit/stream/`` -- for SIEM-style consumers: ``text/event-stream``
  (server-sent events). Each record is an ``audit`` event whose ``id:`` is the
  record id and whose ``data:`` is the same JSON as a REST result; a comment
  line every 15 s keeps idle connections open. A client that reconnects with
  ``Last-Event-ID`` (browsers' EventSource do) or ``?after=<id>`` resumes after
  that record, missing none; ``?start_revision=N`` replays the retained records
  from revision N first. Same filters as the list. Authentication: a session,
  or an API token as ``Authorization: Bearer``. Each record is permission-checked
  as it is sent, so revoking a grant takes effect on an open stream.

Why SSE rather than a websocket: the stream is one-way, plain HTTP (proxies,
``curl -N``, every SIEM's HTTP input), and ``Last-Event-ID`` gives resumption
for free.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from consensus.client import EtcdError
from flags.audit import PAGE_SIZE, AuditEntry, AuditFilters, access_audit_page, audit_stream
from flags.audit_views import filters_from
from flags.exceptions import FlagstaffError, InvalidInput

HEARTBEAT_SECONDS = 15.0
MAX_LIMIT = 500


class AuditChangeSerializer(serializers.Serializer):
    """One changed key: its value before and after (null: absent)."""

    key = serializers.CharField()
    before = serializers.CharField(allow_null=True)
    after = serializers.CharField(allow_null=True)
    kind = serializers.ChoiceField(choices=["create", "update", "delete"])


class AuditRecordSerializer(serializers.Serializer):
    """One audit record (docs/audit.md)."""

    id = serializers.IntegerField()
    revision = serializers.IntegerField()
    time = serializers.DateTimeField()
    principal = serializers.CharField(help_text="The core user ('anonymous' with core auth off).")
    actor = serializers.CharField(help_text="On whose behalf, e.g. user:alice, system:scheduler.")
    reason = serializers.CharField()
    source = serializers.CharField(help_text="ui, api, sdk, job, grpc or expiry.")
    action = serializers.CharField(
        help_text="put, delete, txn, lease_revoke, lease_expire, or a platform event (login, ...)."
    )
    key = serializers.CharField(help_text="A platform event's subject key.")
    changes = AuditChangeSerializer(many=True)
    detail = serializers.DictField()


class AuditPageSerializer(serializers.Serializer):
    """A page of records, newest first, and the URL of the next (older) page."""

    results = AuditRecordSerializer(many=True)
    next = serializers.URLField(allow_null=True)


FILTER_PARAMETERS = [
    OpenApiParameter("actor", OpenApiTypes.STR, description="Exactly this actor (user:alice)."),
    OpenApiParameter("key", OpenApiTypes.STR,
                     description="One key, or every key under a prefix ending in '/'."),
    OpenApiParameter("flag", OpenApiTypes.STR,
                     description="project/flag: that flag in every environment."),
    OpenApiParameter("action", OpenApiTypes.STR, description="put, delete, txn, login, ..."),
    OpenApiParameter("source", OpenApiTypes.STR, description="ui, api, sdk, job, grpc, expiry."),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="At or after (ISO 8601, UTC)."),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="Before (ISO 8601, UTC)."),
]


class AuditListView(APIView):
    """The audit records the caller may read, newest first, paged."""

    @extend_schema(
        parameters=[
            *FILTER_PARAMETERS,
            OpenApiParameter("limit", OpenApiTypes.INT,
                             description=f"Records per page (default {PAGE_SIZE}, at most {MAX_LIMIT})."),
            OpenApiParameter("page", OpenApiTypes.STR, description="The token from a 'next' URL."),
        ],
        responses={200: AuditPageSerializer},
        description="Every change (and platform event) the caller may read, newest first. "
                    "Records cannot be edited or deleted through any endpoint.",
    )
    def get(self, request: Request) -> Response:
        filters = filters_from(request.query_params)
        raw_limit = request.query_params.get("limit", "")
        if raw_limit and (not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT):
            raise InvalidInput(f"must be an integer from 1 to {MAX_LIMIT}", field="limit")
        page_token = request.query_params.get("page", "")
        if page_token and not page_token.isdigit():
            raise InvalidInput("not a page token from a 'next' URL", field="page")
        page = access_audit_page(request.user, filters, page_token=page_token,
                                 limit=int(raw_limit) if raw_limit else PAGE_SIZE)
        next_url = None
        if page.next_token:
            params = request.query_params.copy()
            params["page"] = page.next_token
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"results": [e.as_json() for e in page.entries], "next": next_url})


def _sse(entry: AuditEntry) -> bytes:
    data = json.dumps(entry.as_json(), ensure_ascii=False, separators=(",", ":"))
    return f"id: {entry.id}\nevent: audit\ndata: {data}\n\n".encode()


async def _principal(request: HttpRequest) -> Any:
    """The API token of an ``Authorization: Bearer`` header, else the session's user (or None)."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        from flags.tokens import TokenKind, authenticate_token

        return await sync_to_async(authenticate_token)(
            header[len("Bearer "):].strip(), kinds=[TokenKind.AUTOMATION]
        )
    user = await request.auser()
    return user if user.is_authenticated else None


async def audit_stream_view(request: HttpRequest) -> HttpResponse:
    """``GET /api/v1/audit/stream/``: new audit records as server-sent events."""
    if request.method != "GET":
        return JsonResponse({"errors": [{"field": None, "message": "GET only"}]}, status=405)
    principal = await _principal(request)
    if principal is None:
        response = JsonResponse(
            {"errors": [{"field": None, "message": "authentication required"}]}, status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    try:
        filters = filters_from(request.GET)
        after = request.headers.get("Last-Event-ID", "") or request.GET.get("after", "")
        start = request.GET.get("start_revision", "")
        if (after and not after.isdigit()) or (start and not start.isdigit()):
            raise InvalidInput("Last-Event-ID/after and start_revision must be integers")
    except InvalidInput as exc:
        return JsonResponse(exc.to_json(), status=400)
    stream = _events(principal, filters, int(after or 0), int(start or 0))
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _events(
    principal: Any, filters: AuditFilters, after_id: int, start_revision: int
) -> AsyncIterator[bytes]:
    yield b": flagstaff audit stream\n\n"
    records = audit_stream(principal, filters, after_id=after_id, start_revision=start_revision)
    pending: asyncio.Task[AuditEntry] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(records))
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_SECONDS)
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                entry = pending.result()
            except (FlagstaffError, EtcdError) as exc:
                yield f"event: error\ndata: {json.dumps(str(exc))}\n\n".encode()
                return
            pending = None
            yield _sse(entry)
    finally:
        if pending is not None:
            pending.cancel()
        await records.aclose()  # type: ignore[attr-defined]
