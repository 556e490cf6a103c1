"""Who may read or write which part of the key space: the platform's one permission check.

Every door -- the HTML views, the REST API, and later the websockets and the
discovery service -- asks :func:`has_permission` (through the ``access_*``
functions in ``flags.access``). Today any active, authenticated user may do
everything; the access-control issue replaces the body of
:func:`has_permission` with per-prefix grants (django-guardian object
permissions on a prefix model: a user may act on a key when a grant covers
some prefix above it), and nothing else has to change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Perm(StrEnum):
    """What a caller wants to do with a key."""

    READ = "read"
    WRITE = "write"


def has_permission(user: Any, perm: Perm, key: str) -> bool:
    """Whether ``user`` may ``perm`` the core key ``key`` (or, for a prefix, every key under it)."""
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))
