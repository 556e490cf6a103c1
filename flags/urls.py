"""The editor's HTML pages (the REST API's routes are in ``flags.api.urls``)."""

from __future__ import annotations

from django.urls import URLPattern, path

from flags import audit_views, cluster_views, config_views, schedule_views, views, webhook_views

FLAG_IN_ENV = "projects/<str:project>/environments/<str:environment>/flags/<str:flag>/"

urlpatterns: list[URLPattern] = [
    path("audit/", audit_views.audit_list, name="audit-list"),
    path("audit/export.csv", audit_views.audit_export, name="audit-export"),
    path("audit/<int:record_id>/", audit_views.audit_detail, name="audit-detail"),
    path("projects/<str:project>/flags/", views.flag_list, name="flag-list"),
    path("projects/<str:project>/new-flag/", views.flag_create, name="flag-create"),
    path("projects/<str:project>/flags/<str:flag>/", views.flag_detail, name="flag-detail"),
    path("projects/<str:project>/flags/<str:flag>/kill-switch/", views.flag_kill_switch,
         name="flag-kill-switch"),
    path(FLAG_IN_ENV + "toggle/", views.flag_toggle, name="flag-toggle"),
    path(FLAG_IN_ENV + "rollout/", views.flag_rollout, name="flag-rollout"),
    path(FLAG_IN_ENV + "save/", views.flag_save, name="flag-save"),
    path(FLAG_IN_ENV + "preview/", views.flag_preview, name="flag-preview"),
    path(FLAG_IN_ENV + "rules/reorder/", views.flag_rules_reorder, name="flag-rules-reorder"),
    path("config/", config_views.config_page, name="config-tree"),
    path("config/save/", config_views.config_save, name="config-save"),
    path("config/delete/", config_views.config_delete, name="config-delete"),
    path(FLAG_IN_ENV + "schedules/", schedule_views.schedule_create, name="schedule-create"),
    path(FLAG_IN_ENV + "schedules/<str:schedule>/<str:action>/", schedule_views.schedule_steer,
         name="schedule-steer"),
    path("cluster/", cluster_views.cluster_page, name="cluster"),
    path("cluster/members/", cluster_views.member_add, name="cluster-member-add"),
    path("cluster/members/<str:member>/remove/", cluster_views.member_remove,
         name="cluster-member-remove"),
    path("cluster/backups/", cluster_views.backup_now, name="cluster-backup"),
    path("webhooks/", webhook_views.webhook_list, name="webhooks"),
    path("webhooks/<str:subscription>/", webhook_views.webhook_detail, name="webhook-detail"),
    path("webhooks/<str:subscription>/active/", webhook_views.webhook_active, name="webhook-active"),
    path("webhooks/<str:subscription>/delete/", webhook_views.webhook_delete, name="webhook-delete"),
    path("webhooks/<str:subscription>/deliveries/<str:delivery>/redeliver/",
         webhook_views.webhook_redeliver, name="webhook-redeliver"),
]
