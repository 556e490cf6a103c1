"""The flags Django app: projects, environments, flags, segments and config kept in the core."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class FlagsConfig(AppConfig):
    """The flags app's configuration: audit signals; resets the core gateway when its settings change (tests)."""

    name = "flags"
    verbose_name = "Feature flags"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        setting_changed.connect(_reset_gateway_on_core_settings, dispatch_uid="flags-core-settings")
        _connect_permission_signals()
        from flags.audit import connect_signals

        connect_signals()  # logins and failed logins go to the audit trail


def _reset_gateway_on_core_settings(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("FLAGSTAFF_"):
        from flags.core import reset_core

        reset_core()


def _connect_permission_signals() -> None:
    """Cached permission checks (``flags.permissions``) are dropped when grants or accounts change."""
    from django.contrib.auth import get_user_model
    from django.db.models.signals import m2m_changed, post_delete, post_save
    from guardian.models import GroupObjectPermission, UserObjectPermission

    from flags.namespaces import Namespace
    from flags.permissions import grants_changed
    from flags.tokens import ApiToken

    user_model = get_user_model()
    for model in (UserObjectPermission, GroupObjectPermission, Namespace, ApiToken, user_model):
        post_save.connect(grants_changed, sender=model, dispatch_uid=f"flags-perms-save-{model}")
        post_delete.connect(grants_changed, sender=model, dispatch_uid=f"flags-perms-del-{model}")
    m2m_changed.connect(grants_changed, sender=user_model.groups.through,
                        dispatch_uid="flags-perms-groups")
