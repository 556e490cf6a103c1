"""Routes of the REST API, mounted at ``/api/v1/`` (docs/rest-api.md lists them)."""

from __future__ import annotations

from django.urls import path, register_converter
from drf_spectacular.views import SpectacularAPIView

from flags.api import access, audit, evaluations, schedules, tokens, views


class KeyConverter:
    """A project/environment/flag/segment key in a URL (the key syntax of ``flags.keyspace``)."""

    regex = r"[a-z0-9][a-z0-9._-]{0,127}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(KeyConverter, "key")

P = "projects/<key:project>"
E = f"{P}/environments/<key:environment>"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("audit/", audit.AuditListView.as_view(), name="api-audit"),
    path("audit/stream/", audit.audit_stream_view, name="api-audit-stream"),
    path("auth/token/", tokens.PasswordExchangeView.as_view(), name="api-token"),
    path("tokens/", tokens.TokenListView.as_view(), name="api-tokens"),
    path("sdk/evaluations/", evaluations.EvaluationCountsView.as_view(), name="api-sdk-evaluations"),
    path("tokens/<int:token_id>/", tokens.TokenDetailView.as_view(), name="api-token-detail"),
    path("namespaces/", access.NamespaceListView.as_view(), name="api-namespaces"),
    path("namespaces/<int:namespace_id>/", access.NamespaceDetailView.as_view(),
         name="api-namespace"),
    path("namespaces/<int:namespace_id>/grants/", access.GrantView.as_view(),
         name="api-namespace-grants"),
    path("namespaces/<int:namespace_id>/revoke/", access.GrantView.as_view(revoke=True),
         name="api-namespace-revoke"),
    path("access/effective/", access.EffectiveAccessView.as_view(), name="api-effective-access"),
    path("projects/", views.ProjectListView.as_view(), name="api-projects"),
    path(f"{P}/", views.ProjectDetailView.as_view(), name="api-project"),
    path(f"{P}/environments/", views.EnvironmentListView.as_view(), name="api-environments"),
    path(f"{E}/", views.EnvironmentDetailView.as_view(), name="api-environment"),
    path(f"{P}/flags/", views.FlagListView.as_view(), name="api-flags"),
    path(f"{P}/flags/<key:flag>/", views.FlagDetailView.as_view(), name="api-flag"),
    path(f"{P}/flags/<key:flag>/kill-switch/", views.KillSwitchView.as_view(), name="api-kill-switch"),
    path(f"{P}/flags/<key:flag>/copy/", views.CopySettingsView.as_view(), name="api-flag-copy"),
    path(f"{E}/flags/<key:flag>/", views.FlagEnvironmentView.as_view(), name="api-flag-env"),
    path(f"{E}/flags/<key:flag>/toggle/", views.ToggleView.as_view(), name="api-flag-toggle"),
    path(f"{E}/flags/<key:flag>/rollout/", views.RolloutView.as_view(), name="api-flag-rollout"),
    path(f"{E}/flags/<key:flag>/evaluate/", views.EvaluateView.as_view(), name="api-flag-evaluate"),
    path(f"{E}/flags/<key:flag>/rules/reorder/", views.ReorderRulesView.as_view(),
         name="api-flag-rules-reorder"),
    path(f"{E}/flags/<key:flag>/history/", views.FlagHistoryView.as_view(), name="api-flag-history"),
    path(f"{E}/flags/<key:flag>/schedules/", schedules.ScheduleListView.as_view(),
         name="api-schedules"),
    path(f"{E}/flags/<key:flag>/schedules/<key:schedule>/", schedules.ScheduleDetailView.as_view(),
         name="api-schedule"),
    path(f"{E}/flags/<key:flag>/schedules/<key:schedule>/<key:action>/",
         schedules.ScheduleSteerView.as_view(), name="api-schedule-steer"),
    path(f"{E}/segments/", views.SegmentListView.as_view(), name="api-segments"),
    path(f"{E}/segments/<key:segment>/", views.SegmentDetailView.as_view(), name="api-segment"),
    path("config/", views.ConfigListView.as_view(), name="api-config"),
    path("config/<path:path>", views.ConfigDetailView.as_view(), name="api-config-key"),
]
