"""Health endpoints of the web process: liveness (``/healthz``) and readiness (``/readyz``, asks the core)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from flags.core import core
from flags.exceptions import FlagstaffError


def healthz(request: HttpRequest) -> JsonResponse:
    """The web process answers (nothing else is checked)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """The core answers a Status call through the platform's gateway (503 if not)."""
    try:
        status = core().status()
    except FlagstaffError as exc:
        return JsonResponse({"status": "unavailable", "core": str(exc)}, status=503)
    return JsonResponse({"status": "ok", "core": {"revision": status.header.revision,
                                                  "leader": status.leader}})
