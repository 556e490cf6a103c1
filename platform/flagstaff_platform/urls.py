"""URL routes of the Flagstaff platform: the HTML pages, login, health checks and ``/api/v1/``."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path

from flags import views as flag_views
from flags.login_throttle import ThrottledAuthenticationForm
from flags.metrics import metrics_view
from flagstaff_platform import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", flag_views.home, name="home"),
    path("", include("flags.urls")),
    path("", include("discovery.urls")),
    path("accounts/login/",
         auth_views.LoginView.as_view(authentication_form=ThrottledAuthenticationForm),
         name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("readyz", views.readyz, name="readyz"),
    path("access/", include("flags.access_urls")),
    path("api/v1/", include("flags.api.urls")),
    path("admin/", admin.site.urls),
]
