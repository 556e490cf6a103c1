"""The discovery Django app: the Registry process's command, health-check tasks and the services page."""

from __future__ import annotations

from django.apps import AppConfig


class DiscoveryConfig(AppConfig):
    """The discovery app's configuration (no models: the catalog lives in the core)."""

    name = "discovery"
    verbose_name = "Service discovery"
