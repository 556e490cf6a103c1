"""``manage.py prepare_platform``: what ``flagstaff up`` runs before starting web: migrate, then ensure_admin.

One process instead of two saves a Django start-up on every ``up``.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    """Apply migrations, then create the bootstrap administrator if there is none."""

    help = "Apply migrations and create the first administrator account (flagstaff up's set-up)."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=options["verbosity"], stdout=self.stdout)
        call_command("ensure_admin", stdout=self.stdout)
