"""The Registry's authorizer inside the platform: SERVICE tokens and ``flags.permissions``.

A caller is a platform API token of kind SERVICE (``flags.tokens``); what it
may do is what ``flags.permissions.has_permission`` says for
``/services/<service>/`` -- the check every other door uses. Answers are
cached for :attr:`PlatformAuthorizer.cache_seconds` (default 5 s) so a
thousand instances renewing every second do not each hit the database: a
revoked token stops working within that time.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from discovery.auth import Caller


def _authenticate(secret: str) -> Caller | None:
    from flags.tokens import TokenKind, authenticate_token

    close_old_connections()  # as a request would: honour CONN_MAX_AGE between uses
    try:
        token = authenticate_token(secret, kinds={TokenKind.SERVICE})
        if token is None:
            return None
        token.created_by  # noqa: B018 - loaded now, on this thread, for the permission checks
        return Caller(name=f"token:{token.name}", principal=token)
    finally:
        close_old_connections()


def _may(principal: Any, perm: str, key: str) -> bool:
    from flags.permissions import Perm, has_permission

    close_old_connections()
    try:
        return bool(has_permission(principal, Perm(perm), key))
    finally:
        close_old_connections()


class PlatformAuthorizer:
    """Platform SERVICE tokens and per-prefix permissions, with a short-lived cache."""

    def __init__(self, cache_seconds: float = 5.0) -> None:
        self.cache_seconds = cache_seconds
        self._callers: dict[str, tuple[float, Caller | None]] = {}
        self._answers: dict[tuple[str, str, str], tuple[float, bool]] = {}

    async def authenticate(self, secret: str) -> Caller | None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        now = time.monotonic()
        cached = self._callers.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        caller = await sync_to_async(_authenticate, thread_sensitive=False)(secret)
        if len(self._callers) > 10_000:
            self._callers.clear()
        self._callers[digest] = (now + self.cache_seconds, caller)
        return caller

    async def may(self, caller: Caller, perm: str, key: str) -> bool:
        ident = (str(getattr(caller.principal, "pk", caller.name)), perm, key)
        now = time.monotonic()
        cached = self._answers.get(ident)
        if cached is not None and cached[0] > now:
            return cached[1]
        answer = await sync_to_async(_may, thread_sensitive=False)(caller.principal, perm, key)
        if len(self._answers) > 10_000:
            self._answers.clear()
        self._answers[ident] = (now + self.cache_seconds, answer)
        return answer
