"""The Flagstaff Django project (settings, URLs, ASGI, Celery); lives inside the `platform/` folder."""

from flagstaff_platform.celery import app as celery_app

__all__ = ["celery_app"]
