"""Who calls the Registry and what they may do: bearer tokens and the per-service permission check.

The Registry asks an :class:`Authorizer`; the platform's one
(:class:`discovery.platform_auth.PlatformAuthorizer`) checks platform
SERVICE tokens and ``flags.permissions.has_permission`` -- the same check as
every other door. Kept behind a protocol so this module and the Registry need
no Django.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

AUTHORIZATION_METADATA = "authorization"
READ = "read"
WRITE = "write"
DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: a name for the audit trail (``token:<name>``) and the principal."""

    name: str
    principal: Any


class Authorizer(Protocol):
    """Authenticates bearer secrets and answers permission questions about core keys."""

    async def authenticate(self, secret: str) -> Caller | None:
        """The caller a secret belongs to; None when unknown, revoked, expired or not a service token."""
        ...

    async def may(self, caller: Caller, perm: str, key: str) -> bool:
        """Whether ``caller`` may ``perm`` (``read``/``write``/``delete``) everything under ``key``."""
        ...


def bearer_secret(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The secret of an ``authorization: Bearer <secret>`` metadata pair; None when absent."""
    for key, value in metadata or ():
        if key.lower() != AUTHORIZATION_METADATA:
            continue
        text = value.decode() if isinstance(value, bytes) else str(value)
        scheme, _, secret = text.strip().partition(" ")
        if scheme.lower() == "bearer" and secret.strip():
            return secret.strip()
        return None
    return None
