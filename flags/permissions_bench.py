"""A benchmark of the permission check: loading a person's grants, and checking keys against them.

Run: ``.venv/bin/python -m flags.permissions_bench`` (creates and drops a
scratch database beside the test settings' Postgres; needs no core). Prints
the time to load a person's grants (100 grants: 50 direct, 50 through a
group) and the time per key of a check over 100,000 flag keys.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root), str(root / "platform")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagstaff_platform.settings_for_tests")
    import django

    django.setup()
    from django.test.utils import setup_databases, teardown_databases

    config = setup_databases(verbosity=0, interactive=False)
    try:
        _run()
    finally:
        teardown_databases(config, verbosity=0)


def _run() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from guardian.shortcuts import assign_perm

    from flags.namespaces import CODENAMES, ensure_namespace
    from flags.permissions import CACHE_ATTRIBUTE, Perm, has_permission, permission_checker

    person = get_user_model().objects.create_user("bench", password="bench")
    group = Group.objects.create(name="bench-group")
    person.groups.add(group)
    for i in range(50):  # guardian directly: no audit events, no broadcasts
        namespace = ensure_namespace(f"/flags/proj{i}/production/")
        for perm in (Perm.READ, Perm.WRITE):
            assign_perm(f"flags.{CODENAMES[perm]}", person, namespace)
        assign_perm(f"flags.{CODENAMES[Perm.READ]}", group, ensure_namespace(f"/config/team{i}/"))
    person = get_user_model().objects.get(pk=person.pk)
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        person.__dict__.pop(CACHE_ATTRIBUTE, None)
        permission_checker(person)
    load = (time.perf_counter() - started) / rounds
    keys = [f"/flags/proj{i % 80}/production/flag-{i}" for i in range(100_000)]
    started = time.perf_counter()
    allowed = sum(has_permission(person, Perm.WRITE, key) for key in keys)
    per_key = (time.perf_counter() - started) / len(keys)
    print(f"load a person's grants (100 grants, 50 through a group): {load * 1e3:.2f} ms")
    print(f"has_permission over {len(keys)} flag keys: {per_key * 1e6:.2f} us per key "
          f"({allowed} allowed)")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
