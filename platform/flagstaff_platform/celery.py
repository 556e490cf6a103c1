"""The Celery application of the worker and beat processes (``celery -A flagstaff_platform``).

Configured from the Django settings' ``CELERY_*`` names: kombu's filesystem
transport under ``var/celery/`` when no ``REDIS_URL`` is set (no server
needed), Redis otherwise. Tasks live in the apps' ``tasks.py`` modules. A
worker counts task outcomes and, with ``FLAGSTAFF_WORKER_METRICS_PORT``, serves
them to Prometheus (``flags.metrics``).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagstaff_platform.settings")

app = Celery("flagstaff")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()



@signals.worker_init.connect(weak=False)
def _serve_worker_metrics(**_: Any) -> None:
    """Count task outcomes (``flags.metrics``) and serve them on ``FLAGSTAFF_WORKER_METRICS_PORT``.

    With a prefork pool, set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory)
    so that the pool's processes' counts are added up (prometheus_client's
    multiprocess mode).
    """
    from django.conf import settings

    from flags import metrics

    port = int(getattr(settings, "FLAGSTAFF_WORKER_METRICS_PORT", 0) or 0)
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, registry=metrics.registry())
