"""Websocket routes of the ASGI app (the live-updates relay and the SDK protocol add theirs here)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

websocket_urlpatterns: list[URLPattern | URLResolver] = []
