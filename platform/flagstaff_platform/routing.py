"""Websocket routes of the ASGI app: live updates of flags and segments (``docs/websocket-protocol.md``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from flags.live.consumers import LiveConsumer

websocket_urlpatterns: list[URLPattern | URLResolver] = [
    path("ws/v1/flags/", LiveConsumer.as_asgi(), name="ws-live-flags"),
]
