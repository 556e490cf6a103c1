"""Routes of the access-control pages, mounted at ``/access/``."""

from __future__ import annotations

from django.urls import URLPattern, path

from flags import access_views as views

urlpatterns: list[URLPattern] = [
    path("", views.access_home, name="access-home"),
    path("namespaces/<int:namespace_id>/", views.namespace_detail, name="access-namespace"),
    path("namespaces/<int:namespace_id>/grant/", views.namespace_grant,
         name="access-namespace-grant"),
    path("namespaces/<int:namespace_id>/revoke/", views.namespace_revoke,
         name="access-namespace-revoke"),
    path("namespaces/<int:namespace_id>/delete/", views.namespace_delete,
         name="access-namespace-delete"),
    path("people/", views.effective_access, name="access-effective"),
    path("tokens/", views.token_list, name="access-tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="access-token-revoke"),
]
