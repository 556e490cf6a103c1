"""`flagstaff up` runs the whole embedded system: members, migrate, admin, web, worker and beat."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from celery import Celery

from tests.cluster.harness import ProcessRegistry, free_port, http, port_is_free, wait_until

pytestmark = pytest.mark.timeout(180)

OFFSETS = (0, 20000, 30000)


def _free_base_port() -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, 35000)
        if all(port_is_free(base + o + k) for o in OFFSETS for k in range(3)):
            return base
    raise AssertionError("no free base port found")


def _post_json(url: str, body: dict[str, object], token: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_up_starts_the_platform_and_stops_everything(tmp_path: Path) -> None:
    processes = ProcessRegistry()
    base, web_port, discovery_port = _free_base_port(), free_port(), free_port()
    output = tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "FLAGSTAFF_ENDPOINTS")}
    env["FLAGSTAFF_ADMIN_PASSWORD"] = "first-start-password"
    try:
        proc = processes.popen(
            [sys.executable, "-m", "consensus.cli", "up", "--base-port", str(base),
             "--web-port", str(web_port), "--discovery-port", str(discovery_port),
             "--node-arg=--heartbeat-interval=50",
             "--node-arg=--election-timeout=500"],
            output, cwd=tmp_path, env=env,
        )

        def url_printed() -> bool:
            assert proc.poll() is None, output.read_text()
            return f"web UI and REST API at http://127.0.0.1:{web_port}/" in output.read_text()

        wait_until(url_printed, 120, "`flagstaff up` to print the web URL", interval=0.2)
        wait_until(lambda: f"Registry listening on 127.0.0.1:{discovery_port}" in output.read_text(),
                   60, "the discovery Registry to listen", interval=0.2)
        site = f"http://127.0.0.1:{web_port}"
        assert http("GET", f"{site}/readyz")[0] == 200
        status, body = _post_json(f"{site}/api/v1/auth/token/",
                                  {"username": "admin", "password": "first-start-password"})
        assert status == 201, body
        token = body["token"]  # type: ignore[index]
        status, body = _post_json(f"{site}/api/v1/projects/",
                                  {"key": "demo", "name": "Demo"}, token)
        assert status == 201, body
        etcdctl = subprocess.run(
            ["/usr/bin/etcdctl", f"--endpoints=127.0.0.1:{base}", "get", "/projects/demo",
             "--print-value-only"], capture_output=True, text=True, timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        assert json.loads(etcdctl.stdout)["name"] == "Demo"

        # The worker consumes from the embedded (filesystem) broker and reaches the core.
        queue = str(tmp_path / "var" / "celery" / "queue")
        sender = Celery(broker="filesystem://", broker_transport_options={
            "data_folder_in": queue, "data_folder_out": queue})
        sender.send_task("flags.tasks.check_core_health")
        wait_until(lambda: "core health: {'ok': True" in output.read_text(), 30,
                   "the worker to run check_core_health", interval=0.2)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, output.read_text()
        text = output.read_text()
        assert "stopped the platform (web exit 0, worker exit 0, beat exit 0, discovery exit 0)" in text, text
        assert "stopped (m1 exit 0, m2 exit 0, m3 exit 0)" in text, text
        assert port_is_free(web_port)
        assert port_is_free(discovery_port)
    except BaseException:
        print(output.read_text(errors="replace")[-20000:])  # shown by pytest on failure
        raise
    finally:
        processes.kill_all()
        shutil.rmtree(tmp_path / "var", ignore_errors=True)  # each WAL preallocates 64 MiB
