"""Settings for the test suite: the production settings, on this machine's real Postgres by default.

pytest-django loads this module (pyproject's ``DJANGO_SETTINGS_MODULE``) and
creates and drops a test database (``test_flagstaff_<pid>``) beside the named one. ``DATABASE_URL``
still wins when set, so CI can point elsewhere. The environment is not
modified: processes a test starts (``flagstaff up``) keep the embedded defaults.
"""

from __future__ import annotations

import os

import dj_database_url

from flagstaff_platform.settings import *  # noqa: F403

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/test"
    )
}
# One test database per run, so two runs on one machine (two developers' `make test`) never
# share or drop each other's; pytest-django drops it at the end of the run.
DATABASES["default"]["TEST"] = {"NAME": f"test_flagstaff_{os.getpid()}"}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
