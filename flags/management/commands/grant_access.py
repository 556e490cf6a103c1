"""``manage.py grant_access``: grant (or ``--revoke``) permissions on a namespace from the command line.

For operators bootstrapping a deployment or scripting access without the
``/access/`` pages: ``manage.py grant_access /flags/shop/ --user alice --perms view,edit``
or ``--group qa``. The namespace is created when missing. It acts as the
platform itself (no person), so it is for whoever runs ``manage.py`` on a
platform host; the change is audited as ``system:platform`` and open
websockets re-check at once, as for every grant.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from flags.exceptions import FlagstaffError
from flags.namespaces import LABELS, do_grant, do_revoke, ensure_namespace, prefix_problem
from flags.permissions import Perm

PERM_NAMES = {"view": Perm.READ, "edit": Perm.WRITE, "delete": Perm.DELETE, "manage": Perm.MANAGE}


class Command(BaseCommand):
    """Grant or revoke view/edit/delete/manage on one namespace for one user or group."""

    help = "Grant (or --revoke) permissions on a namespace (key prefix) to a user or group."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="the namespace: a key prefix starting and ending with /")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="a username")
        who.add_argument("--group", help="a group name")
        parser.add_argument("--perms", required=True,
                            help="comma-separated: view, edit, delete, manage")
        parser.add_argument("--revoke", action="store_true", help="take the permissions away")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix: str = options["prefix"]
        problem = prefix_problem(prefix)
        if problem is not None:
            raise CommandError(problem)
        names = [p.strip() for p in options["perms"].split(",") if p.strip()]
        unknown = [n for n in names if n not in PERM_NAMES]
        if unknown or not names:
            raise CommandError(f"--perms: choose from {', '.join(PERM_NAMES)}")
        perms = [PERM_NAMES[n] for n in names]
        holder: Any
        if options["user"]:
            holder = get_user_model().objects.filter(username=options["user"]).first()
        else:
            holder = Group.objects.filter(name=options["group"]).first()
        if holder is None:
            raise CommandError(f"no such {'user' if options['user'] else 'group'}")
        namespace = ensure_namespace(prefix)
        try:
            if options["revoke"]:
                do_revoke(namespace, perms, frm=holder, by=None, source="job")
            else:
                do_grant(namespace, perms, to=holder, by=None, source="job")
        except FlagstaffError as exc:
            raise CommandError(str(exc)) from exc
        verb = "revoked" if options["revoke"] else "granted"
        self.stdout.write(f"grant_access: {verb} {', '.join(LABELS[p] for p in perms)} on "
                          f"{prefix} ({options['user'] or 'group ' + options['group']})")
