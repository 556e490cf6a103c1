"""Websocket routes of the ASGI app: live updates of flags and segments (``docs/websocket-protocol.md``) and of the services page (``discovery.live``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from discovery.live import ServicesConsumer
from flags.live.consumers import LiveConsumer
from flags.live.evaluated import EvaluatedValuesConsumer

websocket_urlpatterns: list[URLPattern | URLResolver] = [
    path("ws/v1/flags/", LiveConsumer.as_asgi(), name="ws-live-flags"),
    path("ws/v1/services/", ServicesConsumer.as_asgi(), name="ws-services"),
]

key_websocket_urlpatterns: list[URLPattern | URLResolver] = [
    # Browser keys (evaluated values only): no cookies, so pages of any origin may connect.
    path("ws/v1/values/", EvaluatedValuesConsumer.as_asgi(), name="ws-values"),
]
KEY_WEBSOCKET_PATHS = frozenset({"/ws/v1/values/"})
