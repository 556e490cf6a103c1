"""The REST API's error bodies: every 4xx/5xx is ``{"errors": [{"field": ..., "message": ...}]}``.

``field`` is a path into the request body (``document.rules[0].clauses[1].values``,
``percentage``) or ``None`` for the request as a whole. A 409 conflict also
carries ``current``: ``{"document": ..., "revision": ...}`` as the core holds it now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from flags.exceptions import FlagstaffError, PayloadTooLarge


def _flatten(detail: Any, path: str | None) -> list[dict[str, Any]]:
    """DRF's nested ``detail`` as a flat list of ``{field, message}`` with dotted paths."""
    if isinstance(detail, Mapping):
        out = []
        for name, value in detail.items():
            if name in ("non_field_errors", settings.REST_FRAMEWORK.get("NON_FIELD_ERRORS_KEY")):
                out += _flatten(value, path)
            else:
                out += _flatten(value, f"{path}.{name}" if path else str(name))
        return out
    if isinstance(detail, list):
        if all(not isinstance(d, Mapping | list) for d in detail):
            return [{"field": path, "message": str(d)} for d in detail]
        out = []
        for i, value in enumerate(detail):
            out += _flatten(value, f"{path}[{i}]" if path else f"[{i}]")
        return out
    return [{"field": path, "message": str(detail)}]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: domain errors and DRF's own, all in the one error shape."""
    if isinstance(exc, FlagstaffError):
        return Response(exc.to_json(), status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(str(exc))
        return Response(exc.to_json(), status=exc.status)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        errors = _flatten(exc.detail, None)
    else:
        detail = getattr(exc, "detail", response.data)
        errors = [{"field": None, "message": str(detail if not isinstance(detail, dict)
                                                 else detail.get("detail", detail))}]
    response.data = {"errors": errors}
    return response


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class BoundedJSONParser(JSONParser):
    """JSON bodies of at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes (413 beyond), strict JSON only."""

    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 1024 * 1024
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise drf_exceptions.ParseError(f"the request body is not valid JSON: {exc}") from None
