"""`flagstaff up` runs the whole embedded system: members, migrate, admin, web, worker, beat and discovery."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
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


def _check_discovery(tmp_path: Path, base: int, discovery_port: int) -> None:
    import grpc

    from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb
    from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2_grpc as pb_grpc

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings",
                "FLAGSTAFF_VAR_DIR": str(tmp_path / "var"),
                "FLAGSTAFF_ENDPOINTS": f"127.0.0.1:{base}"})
    script = ("from django.contrib.auth import get_user_model\n"
              "from flags.tokens import TokenKind, do_create_token\n"
              "admin = get_user_model().objects.get(username='admin')\n"
              "print(do_create_token(created_by=admin, name='web', kind=TokenKind.SERVICE,"
              " scope='web', can_write=True)[1])\n")
    secret = subprocess.run([sys.executable, str(root / "manage.py"), "shell", "-c", script],
                            cwd=root, env=env, capture_output=True, text=True, timeout=60,
                            check=True).stdout.split()[-1]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    auth = (("authorization", f"Bearer {secret}"),)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{discovery_port}") as channel:
            stub = pb_grpc.RegistryStub(channel)
            stub.Register(pb.RegisterRequest(
                service="web", instance_id="web-1", address="127.0.0.1",
                port=listener.getsockname()[1], ttl_seconds=60,
                check=pb.HealthCheck(tcp=pb.TcpCheck(), interval_seconds=1, timeout_seconds=1)),
                metadata=auth, timeout=30)

            def healthy() -> bool:
                listing = stub.List(pb.ListRequest(service="web", healthy_only=True),
                                    metadata=auth, timeout=10)
                return [i.instance_id for i in listing.instances] == ["web-1"]

            wait_until(healthy, 60, "beat and the worker to pass web-1's TCP check", interval=0.5)
    finally:
        listener.close()


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
        sender = Celery(broker="filesystem://", set_as_current=False, broker_transport_options={
            "data_folder_in": queue, "data_folder_out": queue,
            "control_folder": str(tmp_path / "var" / "celery" / "control")})
        sender.send_task("flags.tasks.check_core_health")
        wait_until(lambda: "core health: {'ok': True" in output.read_text(), 30,
                   "the worker to run check_core_health", interval=0.2)

        # Discovery: a service token, a registration with a TCP check, and beat + worker
        # running the check until the instance is healthy.
        _check_discovery(tmp_path, base, discovery_port)

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
