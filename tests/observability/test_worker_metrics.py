"""A Celery worker run as deploy/ runs it serves task outcomes on ``FLAGSTAFF_WORKER_METRICS_PORT``.

The worker (threads pool, kombu's filesystem broker under a temporary
``FLAGSTAFF_VAR_DIR``) gets a ``check_core_health`` task sent by another
process; with no core at ``FLAGSTAFF_ENDPOINTS`` the task still finishes (it
reports the core unhealthy), and the worker's own ``/metrics`` counts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.harness import ROOT, ProcessRegistry, free_port, wait_until

TASK = "flags.tasks.check_core_health"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_serves_task_outcomes(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings",
        "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}",
        "FLAGSTAFF_VAR_DIR": str(tmp_path),
        "FLAGSTAFF_ENDPOINTS": f"127.0.0.1:{free_port()}",  # nobody listens: an unhealthy core
        "FLAGSTAFF_CORE_TIMEOUT": "0.5",
        "FLAGSTAFF_WORKER_METRICS_PORT": str(port),
        "REDIS_URL": "",
    }
    registry = ProcessRegistry()
    try:
        registry.popen(
            [sys.executable, "-m", "celery", "-A", "flagstaff_platform", "worker",
             "--pool=threads", "--concurrency=2", "--loglevel=INFO"],
            tmp_path / "worker.log", env=env,
        )
        wait_until(lambda: scrape(port), 60, "the worker's metrics port", interval=0.2)
        sent = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from flags.tasks import check_core_health; check_core_health.delay()"],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
        )
        assert sent.returncode == 0, sent.stderr
        key = ("flagstaff_celery_tasks_total", (("outcome", "success"), ("task", TASK)))
        assert wait_until(lambda: scrape(port).get(key), 60, "the task to be counted") == 1.0
    finally:
        registry.kill_all()
