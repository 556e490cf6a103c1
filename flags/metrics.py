"""The platform's Prometheus metrics, and the hooks that feed them (``prometheus_client``).

Served as Prometheus text at ``/metrics`` on the web process (:func:`metrics_view`);
a Celery worker serves its own on ``FLAGSTAFF_WORKER_METRICS_PORT`` (see
``flagstaff_platform.celery``). Series (docs/observability.md):

* ``flagstaff_http_requests_total{view,method,status}`` and
  ``flagstaff_http_request_duration_seconds{view}`` -- every request Django
  routes, by URL name (``<unresolved>`` for a 404 no route matched), fed by
  :func:`metrics_middleware`;
* ``flagstaff_websocket_clients{path}`` -- websockets accepted and still open,
  and ``flagstaff_websocket_connections_total{path}``, fed by
  :func:`count_websockets` around the ASGI websocket application;
* ``flagstaff_relay_revision`` -- the last core revision the live-updates relay
  published (compare with the core's ``etcd_debugging_mvcc_current_revision``),
  ``flagstaff_relay_publish_duration_seconds`` -- from a watch batch arriving
  to its last Channels message sent, ``flagstaff_relay_batches_total``;
* ``flagstaff_celery_tasks_total{task,outcome}`` -- ``success``, ``failure``,
  ``retry`` or ``revoked``, from Celery's signals.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from celery import signals
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

HTTP_REQUESTS = Counter(
    "flagstaff_http_requests_total", "HTTP requests answered, by view, method and status.",
    ["view", "method", "status"],
)
HTTP_DURATION = Histogram(
    "flagstaff_http_request_duration_seconds", "Time to answer an HTTP request, by view.", ["view"]
)
WEBSOCKET_CLIENTS = Gauge(
    "flagstaff_websocket_clients", "Websocket connections accepted and still open.", ["path"]
)
WEBSOCKET_CONNECTIONS = Counter(
    "flagstaff_websocket_connections_total", "Websocket connections accepted.", ["path"]
)
RELAY_REVISION = Gauge(
    "flagstaff_relay_revision", "The last core revision the live-updates relay published."
)
RELAY_PUBLISH = Histogram(
    "flagstaff_relay_publish_duration_seconds",
    "Time from a core watch batch reaching the relay to its last Channels message sent.",
)
RELAY_BATCHES = Counter("flagstaff_relay_batches_total", "Core watch batches the relay handled.")
CELERY_TASKS = Counter(
    "flagstaff_celery_tasks_total", "Celery tasks finished, by task name and outcome.",
    ["task", "outcome"],
)

UNRESOLVED_VIEW = "<unresolved>"


# -- HTTP --------------------------------------------------------------------------------------


def _view_name(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNRESOLVED_VIEW
    return str(match.view_name or match.route or UNRESOLVED_VIEW)


def _record(request: HttpRequest, response: HttpResponse, started: float) -> None:
    view = _view_name(request)
    HTTP_REQUESTS.labels(view, request.method or "", str(response.status_code)).inc()
    HTTP_DURATION.labels(view).observe(time.perf_counter() - started)


def metrics_middleware(
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], Any]:
    """Django middleware counting every request by view, method and status (sync and async)."""
    if iscoroutinefunction(get_response):

        async def amiddleware(request: HttpRequest) -> HttpResponse:
            started = time.perf_counter()
            response: HttpResponse = await get_response(request)
            _record(request, response, started)
            return response

        return markcoroutinefunction(amiddleware)

    def middleware(request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response: HttpResponse = get_response(request)
        _record(request, response, started)
        return response

    return middleware


metrics_middleware.sync_capable = True  # type: ignore[attr-defined]
metrics_middleware.async_capable = True  # type: ignore[attr-defined]


# -- websockets --------------------------------------------------------------------------------

AsgiApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def count_websockets(app: AsgiApp) -> AsgiApp:
    """Wrap an ASGI application: a websocket connection counts from its accept to its end."""

    async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "websocket":
            await app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        accepted = False

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if message.get("type") == "websocket.accept" and not accepted:
                accepted = True
                WEBSOCKET_CLIENTS.labels(path).inc()
                WEBSOCKET_CONNECTIONS.labels(path).inc()
            await send(message)

        try:
            await app(scope, receive, counting_send)
        finally:
            if accepted:
                WEBSOCKET_CLIENTS.labels(path).dec()

    return counted


# -- the relay -------------------------------------------------------------------------------


def relay_published(revision: int, seconds: float) -> None:
    """The relay handled one watch batch in ``seconds``; ``revision`` is now published."""
    RELAY_BATCHES.inc()
    RELAY_PUBLISH.observe(seconds)
    RELAY_REVISION.set(revision)


# -- Celery ----------------------------------------------------------------------------------


def _task_name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or sender or "unknown")


def _on_success(sender: Any = None, **_: Any) -> None:
    CELERY_TASKS.labels(_task_name(sender), "success").inc()


def _on_failure(sender: Any = None, **_: Any) -> None:
    CELERY_TASKS.labels(_task_name(sender), "failure").inc()


def _on_retry(sender: Any = None, **_: Any) -> None:
    CELERY_TASKS.labels(_task_name(sender), "retry").inc()


def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    name = getattr(request, "task", None) or _task_name(sender)
    CELERY_TASKS.labels(str(name), "revoked").inc()


signals.task_success.connect(_on_success, weak=False)
signals.task_failure.connect(_on_failure, weak=False)
signals.task_retry.connect(_on_retry, weak=False)
signals.task_revoked.connect(_on_revoked, weak=False)


# -- exposition ------------------------------------------------------------------------------


def registry() -> CollectorRegistry:
    """The registry to expose: the process's own, or every process's under ``PROMETHEUS_MULTIPROC_DIR``."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    return REGISTRY


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: the platform's series in Prometheus text format."""
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
