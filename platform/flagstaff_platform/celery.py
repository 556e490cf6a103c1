"""The Celery application of the worker and beat processes (``celery -A flagstaff_platform``).

Configured from the Django settings' ``CELERY_*`` names: kombu's filesystem
transport under ``var/celery/`` when no ``REDIS_URL`` is set (no server
needed), Redis otherwise. Tasks live in the apps' ``tasks.py`` modules.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagstaff_platform.settings")

app = Celery("flagstaff")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

