"""The flags Django app: projects, environments, flags, segments and config kept in the core."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class FlagsConfig(AppConfig):
    """The flags app's configuration: resets the core gateway when its settings change (tests)."""

    name = "flags"
    verbose_name = "Feature flags"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        setting_changed.connect(_reset_gateway_on_core_settings, dispatch_uid="flags-core-settings")


def _reset_gateway_on_core_settings(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("FLAGSTAFF_"):
        from flags.core import reset_core

        reset_core()
