"""The discovery app's HTML pages."""

from __future__ import annotations

from django.urls import URLPattern, path

from discovery import views

urlpatterns: list[URLPattern] = [
    path("services/", views.services, name="services"),
]
