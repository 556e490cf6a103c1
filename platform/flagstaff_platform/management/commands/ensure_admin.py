"""``manage.py ensure_admin``: create the first administrator account if there is none.

The password is ``FLAGSTAFF_ADMIN_PASSWORD`` when set; otherwise a random
one-time password is generated and printed once (it is not stored anywhere
else: change it after logging in). With an administrator already present
nothing changes. ``flagstaff up`` runs this on every start.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    """Create the bootstrap administrator (``admin`` by default) unless a superuser exists."""

    help = "Create the first administrator account if no superuser exists yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--username", default=os.environ.get("FLAGSTAFF_ADMIN_USER", "admin"),
            help="the account's name (default $FLAGSTAFF_ADMIN_USER or 'admin')",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        username: str = options["username"]
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("ensure_admin: an administrator account exists already")
            return
        password = os.environ.get("FLAGSTAFF_ADMIN_PASSWORD", "")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        user = users.objects.filter(username=username).first()
        if user is None:
            users.objects.create_superuser(username=username, email="", password=password)
        else:
            user.is_superuser = user.is_staff = user.is_active = True
            user.set_password(password)
            user.save()
        if generated:
            self.stdout.write(
                f"ensure_admin: created administrator {username!r} with one-time password: "
                f"{password}\nensure_admin: it is shown only this once; change it after logging in"
            )
        else:
            self.stdout.write(
                f"ensure_admin: created administrator {username!r} "
                "with the password from FLAGSTAFF_ADMIN_PASSWORD"
            )
