"""Who may read or write which part of the key space: the platform's one permission check.

Every door -- the HTML views, the REST API, the websockets and the discovery
service -- asks :func:`has_permission` (directly, or through the ``access_*``
functions in ``flags.access``). A principal is a Django user or an
:class:`~flags.tokens.ApiToken`.

The rule (docs/access-control.md):

- A principal holds *grants*: a key prefix (ending in ``/``) and a set of
  :class:`Perm`. A person's grants are django-guardian object permissions on
  :class:`~flags.namespaces.Namespace` rows (to them or to a group they are in);
  a token's are its kind and scope, intersected with its creator's.
- Access to a key is the union of the grants on every prefix above it.
  Superusers may do everything; inactive and anonymous principals nothing.
- Edit, delete and manage-permissions each imply view; view implies
  evaluate (reading evaluated values, what a browser key may do).
- Records that are not flag documents are decided on the flag space they
  belong to: ``/projects/p`` on ``/flags/p/``, ``/environments/p/e`` on
  ``/flags/p/e/``, and a segment ``/segments/p/e/s`` on ``/flags/p/e/`` (a
  segment belongs to its environment: reading one needs a grant covering the
  whole environment). A project or environment record is *visible* (readable)
  to anyone with a view grant anywhere inside it, so they can navigate to
  what they were given; changing it needs a grant covering it.
- A key ending in ``/`` asks about every key under it (a covering grant).

:func:`permission_checker` loads a principal's grants once, for list pages
that check many keys; :func:`has_permission` is the same check for one key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from flags import keyspace


class Perm(StrEnum):
    """What a caller wants to do with a key."""

    EVALUATE = "evaluate"
    """Read a flag's evaluated value (never its rules): what a browser key may do."""
    READ = "read"
    """View: read records, list their names."""
    WRITE = "write"
    """Edit: create and change records."""
    DELETE = "delete"
    """Delete records."""
    MANAGE = "manage"
    """Manage permissions: grant and revoke access on a namespace (at most what one holds)."""


ALL_PERMS: frozenset[Perm] = frozenset(Perm)

_IMPLIED: dict[Perm, frozenset[Perm]] = {
    Perm.EVALUATE: frozenset({Perm.EVALUATE}),
    Perm.READ: frozenset({Perm.READ, Perm.EVALUATE}),
    Perm.WRITE: frozenset({Perm.WRITE, Perm.READ, Perm.EVALUATE}),
    Perm.DELETE: frozenset({Perm.DELETE, Perm.READ, Perm.EVALUATE}),
    Perm.MANAGE: frozenset({Perm.MANAGE, Perm.READ, Perm.EVALUATE}),
}


def implied(perms: Iterable[Perm]) -> frozenset[Perm]:
    """``perms`` with everything they imply (edit, delete, manage -> view -> evaluate)."""
    out: set[Perm] = set()
    for perm in perms:
        out |= _IMPLIED[perm]
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Grant:
    """Permissions on every key under ``prefix`` (which ends in ``/``; ``/`` is everything)."""

    prefix: str
    perms: frozenset[Perm]


def permission_target(key: str) -> tuple[str, bool]:
    """The path a key's permission is decided on, and whether the key is a container record.

    A container (a project or environment record) is readable when any view
    grant lies inside it, not only above it.
    """
    for root, container in ((keyspace.PROJECTS, True), (keyspace.ENVIRONMENTS, True),
                            (keyspace.SEGMENTS, False)):
        if key.startswith(root):
            # /projects/p, /environments/p/e, /segments/p/e/s: the first two names at most
            parts = [p for p in key[len(root):].split("/") if p][:2]
            tail = "".join(f"{p}/" for p in parts)
            return keyspace.FLAGS + tail, container
    return key, False


class PermissionChecker:
    """One principal's grants, loaded once: answers :func:`has_permission` for many keys.

    Grants are kept by prefix, so a check looks up each ancestor prefix of the
    key (``/``, ``/flags/``, ``/flags/p/``, ...): its cost grows with the key's
    depth, not with the number of grants.
    """

    __slots__ = ("_by_prefix", "_everything", "_limit")

    def __init__(self, grants: Iterable[Grant], *, everything: bool = False,
                 limit: PermissionChecker | None = None) -> None:
        by_prefix: dict[str, set[Perm]] = {}
        for grant in grants:
            by_prefix.setdefault(grant.prefix, set()).update(implied(grant.perms))
        self._by_prefix = {prefix: frozenset(perms) for prefix, perms in by_prefix.items()}
        self._everything = everything
        self._limit = limit
        """Another checker that must also allow (a token is limited by its creator's access)."""

    @classmethod
    def nothing(cls) -> PermissionChecker:
        return cls(())

    @property
    def grants(self) -> list[Grant]:
        return [Grant(prefix, perms) for prefix, perms in sorted(self._by_prefix.items())]

    def allows(self, perm: Perm, key: str) -> bool:
        """Whether ``perm`` on ``key`` is allowed (for a prefix: on every key under it)."""
        if self._limit is not None and not self._limit.allows(perm, key):
            return False
        if self._everything:
            return True
        path, container = permission_target(key)
        by_prefix = self._by_prefix
        end = path.find("/")
        while end >= 0:  # every ancestor prefix of the path, "/" first
            perms = by_prefix.get(path[:end + 1])
            if perms is not None and perm in perms:
                return True
            end = path.find("/", end + 1)
        # A container is visible to whoever may see something inside it.
        return container and perm in (Perm.READ, Perm.EVALUATE) and any(
            perm in perms and prefix.startswith(path) for prefix, perms in by_prefix.items())


def _is_token(principal: Any) -> bool:
    from flags.tokens import ApiToken

    return isinstance(principal, ApiToken)


_generation = [0]
"""Bumped whenever grants may have changed in this process (``flags.apps`` connects the signals)."""
CACHE_ATTRIBUTE = "_flagstaff_permission_checker"


def grants_changed(**kwargs: Any) -> None:
    """Forget every cached checker in this process (a signal receiver: grants or accounts changed)."""
    _generation[0] += 1


def forget_cached_permissions(principal: Any) -> None:
    """Drop ``principal``'s cached checker (another process changed grants: a websocket re-checks)."""
    if principal is not None:
        principal.__dict__.pop(CACHE_ATTRIBUTE, None)


def permission_checker(principal: Any) -> PermissionChecker:
    """The grants of ``principal`` (a Django user, an ``ApiToken``, or None/anonymous).

    Cached on the principal object until grants change in this process: a
    request's user is loaded per request, and long-lived websocket principals
    are refreshed when an access change is broadcast.
    """
    if principal is None or not (getattr(principal, "is_authenticated", False)
                                 and getattr(principal, "is_active", False)):
        return PermissionChecker.nothing()
    generation = _generation[0]
    cached = principal.__dict__.get(CACHE_ATTRIBUTE) if hasattr(principal, "__dict__") else None
    if cached is not None and cached[0] == generation:
        return cached[1]  # type: ignore[no-any-return]
    checker = _load_checker(principal)
    if hasattr(principal, "__dict__"):
        principal.__dict__[CACHE_ATTRIBUTE] = (generation, checker)
    return checker


def _load_checker(principal: Any) -> PermissionChecker:
    if _is_token(principal):
        from flags.tokens import token_grants

        return PermissionChecker(token_grants(principal),
                                 limit=permission_checker(principal.created_by))
    if getattr(principal, "is_superuser", False):
        return PermissionChecker((), everything=True)
    return PermissionChecker(user_grants(principal))


def user_grants(user: Any) -> list[Grant]:
    """A person's grants: guardian permissions on namespaces, to them and to their groups."""
    from flags.namespaces import grants_of_user

    return grants_of_user(user)


def has_permission(principal: Any, perm: Perm, key: str) -> bool:
    """Whether ``principal`` (user or API token) may ``perm`` the core key ``key``.

    For a prefix (ending in ``/``), whether it may on every key under it.
    """
    return permission_checker(principal).allows(perm, key)
