"""The access-control pages: namespaces and who holds what, grants and revokes, effective access, tokens.

Thin views over ``flags.namespaces`` and ``flags.tokens``: every change is one
``do_*`` call that checks the acting person may make it (manage on the
namespace, and hold what they grant), and every destructive change (revoke,
delete a namespace, revoke a token) shows a confirmation page first. Every
form is a POST with Django's CSRF token. A page about a namespace the person
does not manage is a 404, exactly like a missing one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from flags import namespaces as ns
from flags import tokens
from flags.exceptions import FlagstaffError, InvalidInput, NotFound
from flags.permissions import Perm, permission_checker


def _namespace(request: HttpRequest, namespace_id: int) -> ns.Namespace:
    try:
        return ns.access_namespace(request.user, namespace_id)
    except NotFound as exc:
        raise Http404(str(exc)) from None


def _perms(request: HttpRequest) -> list[Perm]:
    return [Perm(p) for p in request.POST.getlist("perms") if p in {g.value for g in ns.GRANTABLE}]


def _holder(request: HttpRequest) -> Any:
    """The user or group a grant form names (``kind`` + ``name``); NotFound when there is none."""
    kind, name = request.POST.get("kind", "user"), request.POST.get("name", "").strip()
    found: Any = (Group.objects.filter(name=name).first() if kind == "group"
                  else get_user_model().objects.filter(username=name).first())
    if found is None:
        raise NotFound(f"no {kind} named {name!r}")
    return found


# -- namespaces ---------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def access_home(request: HttpRequest) -> HttpResponse:
    """The namespaces the person manages, and a form to create one under them."""
    if request.method == "POST":
        try:
            namespace = ns.do_create_namespace(prefix=request.POST.get("prefix", "").strip(),
                                               description=request.POST.get("description", ""),
                                               by=request.user)
        except FlagstaffError as exc:
            messages.error(request, f"Namespace not created: {exc}")
        else:
            messages.success(request, f"Namespace {namespace.prefix} created.")
            return HttpResponseRedirect(reverse("access-namespace", args=[namespace.pk]))
    managed = ns.access_namespaces(request.user)
    return render(request, "access/home.html", {
        "namespaces": [(n, ns.holders(n)) for n in managed],
        "may_create": bool(managed) or request.user.is_superuser,
    })


@login_required
@require_GET
def namespace_detail(request: HttpRequest, namespace_id: int) -> HttpResponse:
    namespace = _namespace(request, namespace_id)
    holders = ns.holders(namespace)
    checker = permission_checker(request.user)
    return render(request, "access/namespace.html", {
        "namespace": namespace,
        "users": [h for h in holders if h.kind == "user"],
        "groups": [h for h in holders if h.kind == "group"],
        "grantable": [(p.value, ns.LABELS[p]) for p in ns.GRANTABLE
                      if checker.allows(p, namespace.prefix)],
    })


@login_required
@require_POST
def namespace_grant(request: HttpRequest, namespace_id: int) -> HttpResponse:
    namespace = _namespace(request, namespace_id)
    try:
        holder = _holder(request)
        perms = _perms(request)
        ns.do_grant(namespace, perms, to=holder, by=request.user)
    except FlagstaffError as exc:
        messages.error(request, f"Not granted: {exc}")
    else:
        messages.success(request, f"Granted {', '.join(ns.LABELS[p] for p in perms)} on "
                                  f"{namespace.prefix} to {ns.principal_label(holder)}.")
    return HttpResponseRedirect(reverse("access-namespace", args=[namespace.pk]))


@login_required
@require_POST
def namespace_revoke(request: HttpRequest, namespace_id: int) -> HttpResponse:
    """Revoke after a confirmation page (the first POST asks, the second with ``confirm=yes`` does it)."""
    namespace = _namespace(request, namespace_id)
    try:
        holder = _holder(request)
    except FlagstaffError as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("access-namespace", args=[namespace.pk]))
    perms = _perms(request)
    if request.POST.get("confirm") != "yes":
        return render(request, "access/confirm.html", {
            "title": "Revoke access",
            "question": f"Take {', '.join(ns.LABELS[p] for p in perms) or 'nothing'} on "
                        f"{namespace.prefix} from {ns.principal_label(holder)}?",
            "action": reverse("access-namespace-revoke", args=[namespace.pk]),
            "fields": [("kind", "group" if isinstance(holder, Group) else "user"),
                       ("name", holder.name if isinstance(holder, Group) else holder.get_username()),
                       *[("perms", p.value) for p in perms]],
            "cancel": reverse("access-namespace", args=[namespace.pk]),
            "button": "Revoke",
        })
    try:
        ns.do_revoke(namespace, perms, frm=holder, by=request.user)
    except FlagstaffError as exc:
        messages.error(request, f"Not revoked: {exc}")
    else:
        messages.success(request, f"Revoked on {namespace.prefix} from {ns.principal_label(holder)}.")
    return HttpResponseRedirect(reverse("access-namespace", args=[namespace.pk]))


@login_required
@require_POST
def namespace_delete(request: HttpRequest, namespace_id: int) -> HttpResponse:
    namespace = _namespace(request, namespace_id)
    if request.POST.get("confirm") != "yes":
        return render(request, "access/confirm.html", {
            "title": "Delete namespace",
            "question": f"Delete namespace {namespace.prefix} and every grant on it?",
            "action": reverse("access-namespace-delete", args=[namespace.pk]),
            "fields": [], "cancel": reverse("access-namespace", args=[namespace.pk]),
            "button": "Delete",
        })
    try:
        ns.do_delete_namespace(namespace, by=request.user)
    except FlagstaffError as exc:
        messages.error(request, f"Not deleted: {exc}")
        return HttpResponseRedirect(reverse("access-namespace", args=[namespace.pk]))
    messages.success(request, f"Namespace {namespace.prefix} deleted.")
    return HttpResponseRedirect(reverse("access-home"))


# -- effective access ---------------------------------------------------------------------------


@login_required
@require_GET
def effective_access(request: HttpRequest) -> HttpResponse:
    """What a person may do, grant by grant (``?user=``; yourself by default).

    Others' grants are shown only on prefixes the viewer manages (all of them
    for superusers), so the page names nothing outside the viewer's reach.
    """
    try:
        person, grants = ns.access_effective_access(request.user,
                                                    request.GET.get("user", "").strip())
    except NotFound as exc:
        raise Http404(str(exc)) from None
    return render(request, "access/effective.html", {"person": person, "grants": grants})


# -- tokens -------------------------------------------------------------------------------------


def _expiry(raw: str) -> datetime | None:
    raw = raw.strip()
    if not raw:
        return None
    parsed = parse_datetime(raw) or parse_datetime(f"{raw}T00:00:00")
    if parsed is None:
        raise InvalidInput("the expiry is a date (YYYY-MM-DD) or a date and time",
                           field="expires_at")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


def _kind(raw: str) -> tokens.TokenKind:
    try:
        return tokens.TokenKind(raw)
    except ValueError:
        raise InvalidInput("choose a token kind: sdk, browser, automation or service",
                           field="kind") from None


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The person's tokens (last used, expiry, state) and a form to create one; the secret once."""
    created: tuple[tokens.ApiToken, str] | None = None
    if request.method == "POST":
        try:
            created = tokens.do_create_token(
                created_by=request.user, name=request.POST.get("name", ""),
                kind=_kind(request.POST.get("kind", "")),
                scope=request.POST.get("scope", "").strip(),
                can_write=request.POST.get("can_write") == "on",
                expires_at=_expiry(request.POST.get("expires_at", "")))
        except FlagstaffError as exc:
            messages.error(request, f"Token not created: {exc}")
    mine = tokens.ApiToken.objects.filter(created_by=request.user)
    return render(request, "access/tokens.html", {
        "tokens": mine, "created": created, "kinds": [k.value for k in tokens.TokenKind],
    }, status=201 if created else 200)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = tokens.ApiToken.objects.filter(pk=token_id).first()
    if token is None or not (request.user.is_superuser or token.created_by_id == request.user.pk):
        raise Http404("no such token")
    if request.POST.get("confirm") != "yes":
        return render(request, "access/confirm.html", {
            "title": "Revoke token",
            "question": f"Revoke {token}? Anything using it stops working at once.",
            "action": reverse("access-token-revoke", args=[token.pk]), "fields": [],
            "cancel": reverse("access-tokens"), "button": "Revoke",
        })
    tokens.do_revoke_token(token, by=request.user)
    messages.success(request, f"Revoked {token}.")
    return HttpResponseRedirect(reverse("access-tokens"))
