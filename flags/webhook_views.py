"""The webhooks pages: subscriptions (create, pause, delete) and each one's delivery log.

Staff only. A subscription's prefixes must all be readable by the person
creating it (``flags.permissions``), since every change under them is sent
out. The signing secret is shown once, on the page answering the creation.
Thin views over ``flags.webhooks``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required, user_passes_test
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from flags import webhooks
from flags.core import Actor
from flags.exceptions import AccessDenied, FlagstaffError, NotFound
from flags.permissions import Perm, has_permission


def _staff(user: object) -> bool:
    return bool(getattr(user, "is_active", False) and getattr(user, "is_staff", False))


def _list_context(request: HttpRequest) -> dict[str, Any]:
    subscriptions = webhooks.list_subscriptions()
    rows = []
    for subscription in subscriptions:
        log = webhooks.list_deliveries(subscription.id)
        rows.append({"subscription": subscription,
                     "pending": sum(1 for d in log if d.state == "pending"),
                     "failed": sum(1 for d in log if d.state == "failed"),
                     "delivered": sum(1 for d in log if d.state == "delivered")})
    return {"rows": rows, "new_secret": "", "errors": [], "values": {}}


@login_required
@user_passes_test(_staff)
@require_http_methods(["GET", "POST"])
def webhook_list(request: HttpRequest) -> HttpResponse:
    """The subscriptions, and the form creating one (POST)."""
    if request.method == "GET":
        return render(request, "webhooks/list.html", _list_context(request))
    values = {k: request.POST.get(k, "").strip() for k in ("url", "prefixes", "description")}
    try:
        prefixes = webhooks.check_prefixes(values["prefixes"])
        for prefix in prefixes:
            if not has_permission(request.user, Perm.READ, prefix):
                raise AccessDenied(f"you may not read {prefix}", field="prefixes")
        subscription, secret = webhooks.do_create_subscription(
            url=values["url"], prefixes=prefixes, description=values["description"],
            actor=Actor.for_user(request.user))
    except FlagstaffError as exc:
        context = _list_context(request)
        context.update(errors=exc.errors, values=values)
        return render(request, "webhooks/list.html", context, status=exc.status)
    context = _list_context(request)
    context.update(new_secret=secret, new_id=subscription.id)
    return render(request, "webhooks/list.html", context, status=201)


def _subscription(subscription_id: str) -> webhooks.Subscription:
    try:
        return webhooks.read_subscription(subscription_id)
    except NotFound as exc:
        raise Http404(str(exc)) from None


@login_required
@user_passes_test(_staff)
@require_GET
def webhook_detail(request: HttpRequest, subscription: str) -> HttpResponse:
    """One subscription and its delivery log (newest first)."""
    record = _subscription(subscription)
    return render(request, "webhooks/detail.html", {
        "subscription": record, "deliveries": webhooks.list_deliveries(record.id)[:200],
    })


def _back(subscription: str) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("webhook-detail", args=[subscription]))


@login_required
@user_passes_test(_staff)
@require_POST
def webhook_active(request: HttpRequest, subscription: str) -> HttpResponse:
    """Pause or resume a subscription (``active=true|false``)."""
    record = _subscription(subscription)
    try:
        webhooks.do_set_subscription_active(record, request.POST.get("active") == "true",
                                            actor=Actor.for_user(request.user))
    except FlagstaffError as exc:
        messages.error(request, str(exc))
    return _back(subscription)


@login_required
@user_passes_test(_staff)
@require_POST
def webhook_delete(request: HttpRequest, subscription: str) -> HttpResponse:
    """Delete a subscription and its delivery log (needs the confirmation box)."""
    record = _subscription(subscription)
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the confirmation box to delete the subscription.")
        return _back(subscription)
    try:
        webhooks.do_delete_subscription(record, actor=Actor.for_user(request.user))
    except FlagstaffError as exc:
        messages.error(request, str(exc))
        return _back(subscription)
    messages.success(request, f"Deleted webhook subscription {subscription}.")
    return HttpResponseRedirect(reverse("webhooks"))


@login_required
@user_passes_test(_staff)
@require_POST
def webhook_redeliver(request: HttpRequest, subscription: str, delivery: str) -> HttpResponse:
    """Send a delivery again (due now)."""
    try:
        record = webhooks.read_delivery(subscription, delivery)
        webhooks.do_redeliver(record, actor=Actor.for_user(request.user))
    except NotFound as exc:
        raise Http404(str(exc)) from None
    except FlagstaffError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Delivery {delivery} will be sent again.")
    return _back(subscription)
