"""Login rate limiting and lockout: a small limiter on Django's cache, for every password door.

After ``FLAGSTAFF_LOGIN_MAX_FAILURES`` (default 5) failed logins for one
username, that username is locked out for ``FLAGSTAFF_LOGIN_LOCKOUT_SECONDS``
(default 900) -- even the right password is refused until then; after
``FLAGSTAFF_LOGIN_MAX_FAILURES_PER_IP`` (default 50) failures from one client
address, that address is. Failures older than the lockout window are
forgotten; a successful login clears the username's count. The counts live in
Django's cache (``CACHES``: Redis when ``REDIS_URL`` is set, so every web
process shares them; process-local memory otherwise).

The doors: the login form (:class:`ThrottledAuthenticationForm`) and the
REST password exchange (``POST /api/v1/auth/token/``). Failed logins are
audited by ``flags.audit`` (Django's ``user_login_failed``); refusals during a
lockout are audited here (``login.locked_out``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest

from flags.exceptions import FlagstaffError

DEFAULT_MAX_FAILURES = 5
DEFAULT_MAX_FAILURES_PER_IP = 50
DEFAULT_LOCKOUT_SECONDS = 900


class LockedOut(FlagstaffError):
    """Too many failed logins: the username (or client address) is locked out for a while."""

    status = 429


def _limits() -> tuple[int, int, int]:
    return (int(getattr(settings, "FLAGSTAFF_LOGIN_MAX_FAILURES", DEFAULT_MAX_FAILURES)),
            int(getattr(settings, "FLAGSTAFF_LOGIN_MAX_FAILURES_PER_IP",
                        DEFAULT_MAX_FAILURES_PER_IP)),
            int(getattr(settings, "FLAGSTAFF_LOGIN_LOCKOUT_SECONDS", DEFAULT_LOCKOUT_SECONDS)))


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"flagstaff:login-failures:{kind}:{digest}"


def client_address(request: HttpRequest | None) -> str:
    """The client's address (``REMOTE_ADDR``; a proxy in front must set it, e.g. daphne's ``--proxy-headers``)."""
    if request is None:
        return ""
    return str(request.META.get("REMOTE_ADDR", ""))


def check_login_allowed(username: str, address: str, *, source: str = "ui") -> None:
    """Raise :class:`LockedOut` when ``username`` or ``address`` has failed too often lately.

    A refusal is a ``login.locked_out`` event in the audit log (``flags.audit``).
    """
    per_user, per_ip, seconds = _limits()
    if int(cache.get(_key("user", username), 0)) >= per_user:
        _record_refusal(username, address, "account", source)
        raise LockedOut(f"too many failed logins for this account; try again in up to "
                        f"{seconds // 60} minutes")
    if address and int(cache.get(_key("ip", address), 0)) >= per_ip:
        _record_refusal(username, address, "address", source)
        raise LockedOut("too many failed logins from this address; try again later")


def _record_refusal(username: str, address: str, locked: str, source: str) -> None:
    from flags.audit import record_platform_event

    record_platform_event(actor=f"user:{username}", action="login.locked_out", source=source,
                          detail={"username": username, "ip": address, "locked": locked})


def record_login_failure(username: str, address: str) -> None:
    _, _, seconds = _limits()
    for key in [_key("user", username), *([_key("ip", address)] if address else [])]:
        cache.add(key, 0, timeout=seconds)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=seconds)


def record_login_success(username: str) -> None:
    cache.delete(_key("user", username))


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing locked-out usernames and addresses and counting failures."""

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        address = client_address(self.request)
        try:
            check_login_allowed(username, address)
        except LockedOut as exc:
            raise forms.ValidationError(str(exc), code="locked_out") from None
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            record_login_failure(username, address)
            raise
        record_login_success(username)
        return cleaned
