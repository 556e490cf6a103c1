"""URL routes of the Flagstaff platform (filled in by the platform issue)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
