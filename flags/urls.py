"""The editor's HTML pages (the REST API's routes are in ``flags.api.urls``)."""

from __future__ import annotations

from django.urls import URLPattern, path

from flags import schedule_views, views

FLAG_IN_ENV = "projects/<str:project>/environments/<str:environment>/flags/<str:flag>/"

urlpatterns: list[URLPattern] = [
    path("projects/<str:project>/flags/", views.flag_list, name="flag-list"),
    path("projects/<str:project>/new-flag/", views.flag_create, name="flag-create"),
    path("projects/<str:project>/flags/<str:flag>/", views.flag_detail, name="flag-detail"),
    path("projects/<str:project>/flags/<str:flag>/kill-switch/", views.flag_kill_switch,
         name="flag-kill-switch"),
    path(FLAG_IN_ENV + "toggle/", views.flag_toggle, name="flag-toggle"),
    path(FLAG_IN_ENV + "rollout/", views.flag_rollout, name="flag-rollout"),
    path(FLAG_IN_ENV + "save/", views.flag_save, name="flag-save"),
    path(FLAG_IN_ENV + "preview/", views.flag_preview, name="flag-preview"),
    path(FLAG_IN_ENV + "schedules/", schedule_views.schedule_create, name="schedule-create"),
    path(FLAG_IN_ENV + "schedules/<str:schedule>/<str:action>/", schedule_views.schedule_steer,
         name="schedule-steer"),
]
