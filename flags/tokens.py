"""API tokens: SDK keys, browser keys, automation and service tokens, stored hashed.

A token is created by a person (:func:`do_create_token`), whose plaintext
secret (``fs_<kind>_<random>``) is shown once and stored only as its SHA-256
hash. Callers present it as ``Authorization: Bearer <secret>`` (REST, gRPC
metadata ``authorization``) or, on websockets, ``?key=<secret>``; the doors
turn it back into an :class:`ApiToken` with :func:`authenticate_token` and
pass that to ``flags.permissions.has_permission`` like a user.

What a token may do is its kind and scope (:func:`token_grants`), and never
more than its creator may do *now*: the check intersects the two, so taking
a grant away from a person takes it from their tokens at once. Creating a
token needs the creator to hold, at that moment, what the token is to allow.

========== ==================================== ======================================
kind       scope                                may
========== ==================================== ======================================
sdk        ``<project>/<environment>`` or a     view (flag documents, segments) --
           key prefix (``/config/payments/``)   read-only
browser    ``<project>/<environment>``          evaluate only (evaluated values,
                                                never rules)
automation a key prefix (or                     view; edit and delete when
           ``<project>/<environment>``)         ``can_write``
service    a service name (``payments``) or a   view; edit and delete (register,
           prefix under ``/services/``          deregister) when ``can_write``
========== ==================================== ======================================
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from flags import keyspace
from flags.exceptions import AccessDenied, InvalidInput, NotFound
from flags.permissions import Grant, Perm, has_permission

SECRET_PREFIX = "fs_"
SERVICES = "/services/"
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
MAX_SCOPE_LENGTH = 512
DISPLAY_CHARS = 6
"""Characters of the random part kept in clear (``fs_sdk_AbC123``) so lists can tell tokens apart."""


class TokenKind(StrEnum):
    """What a token is for; decides which doors accept it and what its scope means."""

    SDK = "sdk"
    """Server-side SDKs: read-only, one environment ``<project>/<env>`` or one key prefix."""
    BROWSER = "browser"
    """Browser SDKs: one environment, evaluated values only, never rules (public by nature)."""
    AUTOMATION = "automation"
    """Scripts and CI over REST: a key prefix, read or read+write."""
    SERVICE = "service"
    """Discovery: service names under ``/services/``, read or read+write (registration)."""


def hash_secret(secret: str) -> str:
    """The stored form of a secret (SHA-256 hex: secrets are 256 random bits, so no slow hash is needed)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class ApiToken(models.Model):
    """One API token: its kind, scope, creator, expiry and use; the secret only as a hash.

    It stands in for a user where the doors expect one (``is_authenticated``,
    ``is_active``, ``get_username``), so ``request.user`` may be a token.
    """

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=[(k.value, k.value) for k in TokenKind])
    scope = models.CharField(max_length=MAX_SCOPE_LENGTH)
    can_write = models.BooleanField(default=False)
    display_prefix = models.CharField(max_length=40)
    secret_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                   related_name="api_tokens")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")

    class Meta:
        app_label = "flags"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} token {self.name!r} ({self.display_prefix}...)"

    # -- what the doors ask of a principal ---------------------------------------------------

    @property
    def token_kind(self) -> TokenKind:
        return TokenKind(self.kind)

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    @property
    def is_superuser(self) -> bool:
        return False

    @property
    def is_staff(self) -> bool:
        return False

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_active(self) -> bool:
        """Usable now: not revoked, not expired, and its creator is an active account."""
        return not self.is_revoked and not self.is_expired and bool(self.created_by.is_active)

    def get_username(self) -> str:
        """``<creator>/token:<name>``: the audit actor becomes ``user:alice/token:deploy-bot``.

        Django usernames cannot contain ``/``, so this never names a person.
        """
        return f"{self.created_by.get_username()}/token:{self.name}"

    @property
    def environment(self) -> tuple[str, str] | None:
        """``(project, environment)`` for an environment-scoped token, else None."""
        return parse_environment_scope(self.scope)


# -- scopes -----------------------------------------------------------------------------------


def parse_environment_scope(scope: str) -> tuple[str, str] | None:
    """``(project, environment)`` when ``scope`` is ``<project>/<environment>``, else None."""
    parts = scope.split("/")
    if len(parts) == 2 and keyspace.is_key(parts[0]) and keyspace.is_key(parts[1]):
        return parts[0], parts[1]
    return None


def _is_prefix(scope: str) -> bool:
    return (scope.startswith("/") and scope.endswith("/") and "//" not in scope
            and len(scope) <= MAX_SCOPE_LENGTH and scope.isprintable() and " " not in scope)


def scope_prefixes(kind: TokenKind, scope: str) -> list[str]:
    """The key prefixes ``scope`` covers for a token of ``kind``; InvalidInput when it is not valid."""
    env = parse_environment_scope(scope)
    if kind is TokenKind.BROWSER:
        if env is None:
            raise InvalidInput("a browser key's scope is one environment: <project>/<environment>",
                               field="scope")
        return [keyspace.flags_prefix(*env)]
    if kind is TokenKind.SERVICE:
        if SERVICE_NAME.fullmatch(scope):
            return [f"{SERVICES}{scope}/"]
        if scope.startswith(SERVICES) and _is_prefix(scope):
            return [scope]
        raise InvalidInput("a service token's scope is a service name or a prefix under /services/",
                           field="scope")
    if env is not None:
        return [keyspace.flags_prefix(*env)]
    if _is_prefix(scope):
        return [scope]
    raise InvalidInput("the scope is <project>/<environment> or a key prefix starting and ending "
                       "with /", field="scope")


def token_grants(token: ApiToken) -> list[Grant]:
    """What the token's kind and scope allow (before the creator's own access limits it)."""
    kind = token.token_kind
    if kind is TokenKind.BROWSER:
        perms = frozenset({Perm.EVALUATE})
    elif kind is TokenKind.SDK or not token.can_write:
        perms = frozenset({Perm.READ})
    else:
        perms = frozenset({Perm.READ, Perm.WRITE, Perm.DELETE})
    try:
        prefixes = scope_prefixes(kind, token.scope)
    except InvalidInput:
        return []
    return [Grant(prefix, perms) for prefix in prefixes]


# -- actions ----------------------------------------------------------------------------------


def _new_secret(kind: TokenKind) -> str:
    return f"{SECRET_PREFIX}{kind.value}_{secrets.token_urlsafe(32)}"


def do_create_token(
    *,
    created_by: Any,
    name: str,
    kind: TokenKind,
    scope: str,
    can_write: bool = False,
    expires_at: datetime | None = None,
    source: str = "ui",
) -> tuple[ApiToken, str]:
    """Create a token; returns it and its plaintext secret (shown once, never stored).

    Refused (InvalidInput) for a bad name, scope or expiry, or ``can_write`` on
    an SDK or browser key; refused (AccessDenied) when ``created_by`` does not
    hold, now, every permission the token would carry on its whole scope.
    """
    kind = TokenKind(kind)
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise InvalidInput("a token needs a name of 1-100 printable characters", field="name")
    if can_write and kind in (TokenKind.SDK, TokenKind.BROWSER):
        raise InvalidInput(f"{kind.value} keys are read-only", field="can_write")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("the expiry must be in the future", field="expires_at")
    prefixes = scope_prefixes(kind, scope)
    draft = ApiToken(name=name, kind=kind.value, scope=scope, can_write=can_write)
    for grant in token_grants(draft):
        # Delete is not required up front: a writing token deletes only where its creator
        # may (every use is limited by the creator's access at that moment).
        for perm in grant.perms - {Perm.DELETE}:
            if not has_permission(created_by, perm, grant.prefix):
                raise AccessDenied(f"you may not give a token {perm.value} on {grant.prefix}: "
                                   "a token carries at most what its creator holds",
                                   field="scope")
    assert prefixes  # validated above
    secret = _new_secret(kind)
    token = ApiToken.objects.create(
        name=name, kind=kind.value, scope=scope, can_write=can_write,
        display_prefix=secret[: len(SECRET_PREFIX) + len(kind.value) + 1 + DISPLAY_CHARS],
        secret_hash=hash_secret(secret), created_by=created_by, expires_at=expires_at,
    )
    _record("token.create", created_by, token, source)
    return token, secret


def authenticate_token(secret: str, *, kinds: Collection[TokenKind] | None = None) -> ApiToken | None:
    """The token with this secret, or None when unknown, revoked, expired or of another kind.

    Records the use (``last_used_at``).
    """
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX) or len(secret) > 200:
        return None
    token = (ApiToken.objects.select_related("created_by")
             .filter(secret_hash=hash_secret(secret)).first())
    if token is None or not token.is_active:
        return None
    if kinds is not None and token.token_kind not in {TokenKind(k) for k in kinds}:
        return None
    now = timezone.now()
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now
    return token


def do_revoke_token(token: ApiToken, *, by: Any, source: str = "ui") -> None:
    """Revoke ``token`` for good (idempotent). Its creator, or a superuser, may."""
    if not (getattr(by, "is_superuser", False) or token.created_by_id == getattr(by, "pk", None)):
        raise NotFound("no such token")
    if token.revoked_at is not None:
        return
    token.revoked_at = timezone.now()
    token.revoked_by = by
    token.save(update_fields=["revoked_at", "revoked_by"])
    _record("token.revoke", by, token, source)
    _announce_revocation(token)


def _record(action: str, actor: Any, token: ApiToken, source: str) -> None:
    """Hand a token change to the platform audit log (``flags.audit``; never the secret)."""
    from flags.audit import record_platform_event

    record_platform_event(actor=f"user:{actor.get_username()}", action=action, key=token.scope,
                          source=source,
                          detail={"token": token.display_prefix, "name": token.name,
                                  "kind": token.kind, "scope": token.scope,
                                  "can_write": token.can_write,
                                  "owner": token.created_by.get_username()})


def _announce_revocation(token: ApiToken) -> None:
    """Tell open websockets (``flags.live``) that access changed, so they re-check at once."""
    from flags.live.access_events import announce_access_change

    announce_access_change(token_id=token.pk)
