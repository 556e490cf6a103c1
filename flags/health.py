"""Health signals of progressive rollouts: a webhook's answer or a Prometheus query.

A rollout opts in with ``"health": {...}`` (``flags.schedules``):

* ``{"type": "webhook", "url": "https://..."}`` -- the scheduler POSTs the
  rollout's state as JSON (``{"flag", "project", "environment", "schedule",
  "step", "percentage"}``); a 2xx answer is healthy unless its JSON body says
  ``{"healthy": false}``; any other status, a timeout or a refused connection
  is a failure.
* ``{"type": "prometheus", "url": "http://prom:9090/api/v1/query?query=...",
  "max": 0.01}`` -- the scheduler GETs the URL (Prometheus' instant-query
  API); a failure when the answer is not ``"status": "success"`` or any
  sample's value is above ``max`` (default 0), e.g. an error ratio.

``timeout`` (seconds, default 10) bounds each call. A signal that cannot be
reached counts as a failure: a rollout never advances on a health check it
could not make.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import urlsplit

from flags.exceptions import InvalidInput

if TYPE_CHECKING:
    from flags.schedules import Schedule

MAX_BODY = 1024 * 1024


class HealthSignal(TypedDict):
    """A rollout's health signal, as stored in its schedule."""

    type: str
    url: str
    max: float
    timeout: float


def _check_url(url: object, field: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
            or not urlsplit(url).netloc or len(url) > 2048:
        raise InvalidInput("must be an http(s) URL", field=field)
    return url


def parse_health(value: object) -> HealthSignal | None:
    """A validated health signal from a request (None: no signal)."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise InvalidInput("must be an object {type, url}", field="health")
    kind = value.get("type")
    if kind not in ("webhook", "prometheus"):
        raise InvalidInput("must be 'webhook' or 'prometheus'", field="health.type")
    limit = value.get("max", 0)
    timeout = value.get("timeout", 10)
    for name, number in (("max", limit), ("timeout", timeout)):
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise InvalidInput("must be a number", field=f"health.{name}")
    if not 0 < timeout <= 60:
        raise InvalidInput("must be more than 0 and at most 60 seconds", field="health.timeout")
    return HealthSignal(type=str(kind), url=_check_url(value.get("url"), "health.url"),
                        max=float(limit), timeout=float(timeout))


def _call(request: urllib.request.Request, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(MAX_BODY)


def check_health(signal: HealthSignal, schedule: Schedule) -> str | None:
    """Ask ``signal`` about ``schedule``'s rollout: None when healthy, else what failed."""
    try:
        if signal["type"] == "webhook":
            body = json.dumps({
                "project": schedule.project, "environment": schedule.environment,
                "flag": schedule.flag, "schedule": schedule.id, "step": schedule.step,
                "percentage": schedule.steps[schedule.step - 1] if schedule.step else None,
            }).encode()
            request = urllib.request.Request(signal["url"], data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            status, raw = _call(request, signal["timeout"])
            if not 200 <= status < 300:
                return f"the health webhook answered {status}"
            try:
                answer: Any = json.loads(raw) if raw.strip() else {}
            except ValueError:
                answer = {}
            if isinstance(answer, dict) and answer.get("healthy") is False:
                return f"the health webhook reported unhealthy: {answer.get('reason', '')}".rstrip(": ")
            return None
        status, raw = _call(urllib.request.Request(signal["url"], method="GET"), signal["timeout"])
        try:
            answer = json.loads(raw)
        except ValueError:
            return f"Prometheus answered {status} without JSON"
        if status != 200 or not isinstance(answer, dict) or answer.get("status") != "success":
            return f"Prometheus answered {status}: {str(answer)[:200]}"
        data: dict[str, Any] = answer["data"] if isinstance(answer.get("data"), dict) else {}
        result = data.get("result")
        samples: list[Any] = []
        if isinstance(result, list):
            samples = [s.get("value") for s in result if isinstance(s, dict)]
        if data.get("resultType") == "scalar":
            samples = [result]
        for sample in samples:
            try:
                value = float(sample[1])
            except (TypeError, ValueError, IndexError):
                return f"Prometheus sample {sample!r} is not a number"
            if math.isnan(value) or value > signal["max"]:
                return f"Prometheus value {value:g} is above {signal['max']:g}"
        return None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return f"the health signal could not be reached: {exc}"
