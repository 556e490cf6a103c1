"""Namespaces: key prefixes that people and groups are granted view, edit, delete or manage on.

A :class:`Namespace` is one prefix of the core's key space (``/flags/checkout/``,
``/config/payments/``, ``/`` for everything); grants are django-guardian object
permissions on it, to users and to groups. ``flags.permissions`` turns them
into the one check; this module holds the model, the actions that change
grants (``do_*``: validated, recorded in the audit log, broadcast so open
websockets re-check at once) and the reads the management pages show.

No privilege escalation: creating or deleting a namespace, and granting or
revoking on one, needs *manage* on its prefix (or on a prefix above it), and a
person can grant only permissions they hold there themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models import BigIntegerField, OuterRef, Subquery
from django.db.models.functions import Cast
from django.utils import timezone

from flags.exceptions import AccessDenied, AlreadyExists, InvalidInput, NotFound
from flags.permissions import Grant, Perm, has_permission, permission_checker

MAX_PREFIX_LENGTH = 512

CODENAMES: dict[Perm, str] = {
    Perm.READ: "view_namespace",
    Perm.WRITE: "change_namespace",
    Perm.DELETE: "delete_namespace",
    Perm.MANAGE: "manage_namespace",
}
"""The guardian permission codename of each grantable :class:`Perm` (evaluate is implied by view)."""
PERMS_BY_CODENAME = {codename: perm for perm, codename in CODENAMES.items()}
GRANTABLE: tuple[Perm, ...] = (Perm.READ, Perm.WRITE, Perm.DELETE, Perm.MANAGE)
LABELS = {Perm.READ: "view", Perm.WRITE: "edit", Perm.DELETE: "delete",
          Perm.MANAGE: "manage permissions"}


class Namespace(models.Model):
    """One key prefix grants are given on (ends in ``/``; ``/`` is the whole key space)."""

    prefix = models.CharField(max_length=MAX_PREFIX_LENGTH, unique=True)
    description = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                   blank=True, related_name="+")

    class Meta:
        app_label = "flags"
        ordering = ["prefix"]
        permissions = [("manage_namespace", "Can manage permissions on the namespace")]

    def __str__(self) -> str:
        return self.prefix


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be a namespace, or None."""
    if not prefix.startswith("/") or not prefix.endswith("/"):
        return "a namespace is a key prefix that starts and ends with /"
    if "//" in prefix or len(prefix) > MAX_PREFIX_LENGTH:
        return "a namespace has no empty segments and at most 512 characters"
    if not prefix.isprintable() or any(c.isspace() for c in prefix):
        return "a namespace has no spaces or control characters"
    return None


# -- reading grants -----------------------------------------------------------------------------


NAMESPACE_TYPE: dict[str, str] = {"content_type__app_label": "flags",
                                  "content_type__model": "namespace"}
"""Guardian rows about namespaces, selected by the content type's natural key rather than a
cached id: content types can be re-created with new ids (a test database flush) while
another process (daphne) still holds the old id in Django's ContentType cache."""


def grants_of_user(user: Any) -> list[Grant]:
    """Every grant a person holds, directly or through a group, as prefixes (two queries)."""
    from guardian.models import GroupObjectPermission, UserObjectPermission

    prefix_of = Subquery(Namespace.objects.filter(pk=OuterRef("namespace_id")).values("prefix")[:1])
    perms: dict[str, set[Perm]] = {}
    for queryset in (UserObjectPermission.objects.filter(user=user, **NAMESPACE_TYPE),
                     GroupObjectPermission.objects.filter(group__user=user, **NAMESPACE_TYPE)):
        rows = (queryset.annotate(namespace_id=Cast("object_pk", BigIntegerField()))
                .annotate(prefix=prefix_of).values_list("prefix", "permission__codename"))
        for prefix, codename in rows:
            if prefix is not None and codename in PERMS_BY_CODENAME:
                perms.setdefault(prefix, set()).add(PERMS_BY_CODENAME[codename])
    return [Grant(prefix, frozenset(p)) for prefix, p in perms.items()]


@dataclass(slots=True)
class Holder:
    """Who holds what on one namespace: a user or a group, and its permissions there."""

    kind: str
    """``user`` or ``group``."""
    name: str
    pk: int
    perms: set[Perm] = field(default_factory=set)

    @property
    def labels(self) -> list[str]:
        return [LABELS[p] for p in GRANTABLE if p in self.perms]


def holders(namespace: Namespace) -> list[Holder]:
    """The users and groups granted something on ``namespace`` (users first, by name)."""
    from guardian.models import GroupObjectPermission, UserObjectPermission

    out: dict[tuple[str, int], Holder] = {}
    for pk, name, codename in UserObjectPermission.objects.filter(
            **NAMESPACE_TYPE, object_pk=str(namespace.pk)).values_list(
            "user_id", "user__username", "permission__codename"):
        if codename in PERMS_BY_CODENAME:
            out.setdefault(("user", pk), Holder("user", name, pk)).perms.add(
                PERMS_BY_CODENAME[codename])
    for pk, name, codename in GroupObjectPermission.objects.filter(
            **NAMESPACE_TYPE, object_pk=str(namespace.pk)).values_list(
            "group_id", "group__name", "permission__codename"):
        if codename in PERMS_BY_CODENAME:
            out.setdefault(("group", pk), Holder("group", name, pk)).perms.add(
                PERMS_BY_CODENAME[codename])
    return sorted(out.values(), key=lambda h: (h.kind != "user", h.name))


@dataclass(frozen=True, slots=True)
class EffectiveGrant:
    """One line of a person's effective access: a prefix, what it allows, and where it comes from."""

    prefix: str
    perms: tuple[Perm, ...]
    via: str
    """``direct`` or ``group <name>``."""

    @property
    def labels(self) -> list[str]:
        return [LABELS[p] for p in self.perms]


def effective_access(user: Any) -> list[EffectiveGrant]:
    """Everything ``user`` may do, grant by grant with its source (superusers: everything)."""
    from guardian.models import GroupObjectPermission, UserObjectPermission

    if getattr(user, "is_superuser", False):
        return [EffectiveGrant("/", GRANTABLE, "superuser")]
    found: dict[tuple[str, str], set[Perm]] = {}
    for pk, codename in UserObjectPermission.objects.filter(user=user, **NAMESPACE_TYPE) \
            .values_list("object_pk", "permission__codename"):
        if codename in PERMS_BY_CODENAME:
            found.setdefault((pk, "direct"), set()).add(PERMS_BY_CODENAME[codename])
    for pk, group, codename in GroupObjectPermission.objects.filter(
            group__user=user, **NAMESPACE_TYPE).values_list(
            "object_pk", "group__name", "permission__codename"):
        if codename in PERMS_BY_CODENAME:
            found.setdefault((pk, f"group {group}"), set()).add(PERMS_BY_CODENAME[codename])
    prefixes = dict(Namespace.objects.filter(pk__in=[int(pk) for pk, _ in found])
                    .values_list("pk", "prefix"))
    out = [EffectiveGrant(prefixes[int(pk)], tuple(p for p in GRANTABLE if p in perms), via)
           for (pk, via), perms in found.items() if int(pk) in prefixes]
    return sorted(out, key=lambda g: (g.prefix, g.via))


def access_effective_access(viewer: Any, username: str) -> tuple[Any, list[EffectiveGrant]]:
    """A person (``username``; the viewer when empty) and their grants, as ``viewer`` may see them.

    Your own in full; someone else's only on namespaces the viewer manages
    (all for superusers). NotFound for an unknown name, and for anyone else's
    when the viewer manages nothing.
    """
    from django.contrib.auth import get_user_model

    name = username or viewer.get_username()
    person = get_user_model().objects.filter(username=name).first()
    if person is None:
        raise NotFound(f"no user {name!r}")
    grants = effective_access(person)
    if person.pk != viewer.pk and not viewer.is_superuser:
        if not access_namespaces(viewer):
            raise NotFound(f"no user {name!r}")
        checker = permission_checker(viewer)
        grants = [g for g in grants if checker.allows(Perm.MANAGE, g.prefix)]
    return person, grants


def access_namespaces(user: Any) -> list[Namespace]:
    """The namespaces ``user`` may see on the management pages: those under a prefix they manage."""
    checker = permission_checker(user)
    return [n for n in Namespace.objects.all() if checker.allows(Perm.MANAGE, n.prefix)]


def access_namespace(user: Any, namespace_id: int) -> Namespace:
    """One namespace ``user`` manages (NotFound otherwise, as for a missing one)."""
    namespace = Namespace.objects.filter(pk=namespace_id).first()
    if namespace is None or not has_permission(user, Perm.MANAGE, namespace.prefix):
        raise NotFound("no such namespace")
    return namespace


# -- actions ------------------------------------------------------------------------------------


def _check_manager(by: Any | None, prefix: str) -> None:
    if by is not None and not has_permission(by, Perm.MANAGE, prefix):
        raise AccessDenied(f"you may not manage permissions on {prefix}")


def do_create_namespace(*, prefix: str, description: str = "", by: Any | None,
                        source: str = "ui") -> Namespace:
    """Create a namespace; ``by`` must manage a prefix above it (None: the platform itself)."""
    problem = prefix_problem(prefix)
    if problem is not None:
        raise InvalidInput(problem, field="prefix")
    _check_manager(by, prefix)
    if Namespace.objects.filter(prefix=prefix).exists():
        raise AlreadyExists(f"namespace {prefix} exists", field="prefix")
    namespace = Namespace.objects.create(prefix=prefix, description=description.strip()[:500],
                                         created_by=by)
    _record(by, "namespace.create", {"namespace": prefix}, source)
    return namespace


def do_delete_namespace(namespace: Namespace, *, by: Any | None, source: str = "ui") -> None:
    """Delete a namespace and every grant on it (takes effect at once, on open websockets too)."""
    _check_manager(by, namespace.prefix)
    from guardian.models import GroupObjectPermission, UserObjectPermission

    with transaction.atomic():
        UserObjectPermission.objects.filter(**NAMESPACE_TYPE, object_pk=str(namespace.pk)).delete()
        GroupObjectPermission.objects.filter(**NAMESPACE_TYPE, object_pk=str(namespace.pk)).delete()
        namespace.delete()
    _record(by, "namespace.delete", {"namespace": namespace.prefix}, source)
    _changed()


def principal_label(to: Any) -> str:
    """``user:<name>`` or ``group:<name>``: how grants and the audit log name a holder."""
    return f"group:{to.name}" if isinstance(to, Group) else f"user:{to.get_username()}"


def do_grant(namespace: Namespace, perms: Iterable[Perm], *, to: Any, by: Any | None,
             source: str = "ui") -> None:
    """Grant ``perms`` on ``namespace`` to a user or group.

    ``by`` must manage the namespace and hold each permission there itself
    (None: the platform itself, e.g. ``ensure_admin`` or a test fixture).
    """
    perms = list(dict.fromkeys(Perm(p) for p in perms))
    if not perms or any(p not in CODENAMES for p in perms):
        raise InvalidInput("grant one or more of view, edit, delete, manage", field="perms")
    _check_manager(by, namespace.prefix)
    for perm in perms:
        if by is not None and not has_permission(by, perm, namespace.prefix):
            raise AccessDenied(f"you may grant only what you hold: you may not "
                               f"{LABELS[perm]} on {namespace.prefix}")
    from guardian.shortcuts import assign_perm

    _fresh_content_types()
    with transaction.atomic():
        for perm in perms:
            assign_perm(f"flags.{CODENAMES[perm]}", to, namespace)
    _record(by, "permission.grant", {"namespace": namespace.prefix, "to": principal_label(to),
                                     "perms": [p.value for p in perms]}, source)
    _changed()


def do_revoke(namespace: Namespace, perms: Iterable[Perm], *, frm: Any, by: Any | None,
              source: str = "ui") -> None:
    """Take ``perms`` on ``namespace`` from a user or group (``by`` must manage it)."""
    perms = list(dict.fromkeys(Perm(p) for p in perms))
    if not perms or any(p not in CODENAMES for p in perms):
        raise InvalidInput("revoke one or more of view, edit, delete, manage", field="perms")
    _check_manager(by, namespace.prefix)
    from guardian.shortcuts import remove_perm

    _fresh_content_types()
    with transaction.atomic():
        for perm in perms:
            remove_perm(f"flags.{CODENAMES[perm]}", frm, namespace)
    _record(by, "permission.revoke", {"namespace": namespace.prefix, "from": principal_label(frm),
                                      "perms": [p.value for p in perms]}, source)
    _changed()


def _fresh_content_types() -> None:
    """Drop Django's ContentType cache before guardian writes (see ``NAMESPACE_TYPE``)."""
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()


def ensure_namespace(prefix: str, *, description: str = "") -> Namespace:
    """The namespace for ``prefix``, created by the platform itself if missing (no checks)."""
    namespace, _ = Namespace.objects.get_or_create(prefix=prefix,
                                                   defaults={"description": description})
    return namespace


def _record(by: Any | None, action: str, detail: dict[str, Any], source: str) -> None:
    """Hand a permission change to the platform audit log (``flags.audit``)."""
    from flags.audit import record_platform_event

    actor = "system:platform" if by is None else f"user:{by.get_username()}"
    record_platform_event(actor=actor, action=action, detail=detail, source=source,
                          key=str(detail.get("namespace", "")))


def _changed() -> None:
    from flags.live.access_events import announce_access_change

    announce_access_change()
