"""Propagation: a save through the REST API to the change callback of 1, 100, 1,000 SDK clients.

Starts a private platform on free loopback ports, the way ``flagstaff up``
does (``consensus.up``'s command lines: 3 core members, ``prepare_platform``,
daphne with the embedded SQLite and the in-memory Channels layer), creates a
superuser, an automation token and an SDK key (``manage.py shell``), a
project and a flag over REST. Then, per client count, worker processes each
run their share of ``AsyncClient`` instances on one event loop; the bench
toggles the flag (once all clients are connected: they connect in batches of
``RAMP_BATCH``) through ``POST .../toggle/`` and every client's
``on_change`` callback records ``time.monotonic()`` (system-wide on Linux, so
comparable across processes). Latency = callback time - the moment before the
HTTP request was sent. Saves are sequential: the next one starts once every
client saw the previous one.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.up import MemberEndpoints, ProcessSpec, member_specs, platform_specs

PROJECT, ENVIRONMENT, FLAG = "bench", "production", "propagation"
RAMP_BATCH = 20
"""Clients a worker connects at once (each batch ready before the next)."""

_TOKENS_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from flags.tokens import TokenKind, do_create_token
owner = get_user_model().objects.create_superuser("bench", password="bench-password")
_, automation = do_create_token(created_by=owner, name="bench-rest", kind=TokenKind.AUTOMATION,
                                scope="/", can_write=True)
_, sdk = do_create_token(created_by=owner, name="bench-sdk", kind=TokenKind.SDK,
                         scope="PROJECT/ENVIRONMENT")
print(json.dumps({"automation": automation, "sdk": sdk}))
""".replace("PROJECT", PROJECT).replace("ENVIRONMENT", ENVIRONMENT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Platform:
    """A running private platform: its URL and the keys the bench uses."""

    url: str
    automation_key: str
    sdk_key: str


def _request(method: str, url: str, key: str, body: Any | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:g} s")
        time.sleep(0.2)


@contextmanager
def private_platform(redis_url: str | None = None) -> Iterator[Platform]:
    """3 members + prepare_platform + daphne on free ports under a temporary directory.

    The Channels layer is the embedded in-memory one, or Redis at ``redis_url``
    (production's).
    """
    base = Path(tempfile.mkdtemp(prefix="flagstaff-bench-sdk-"))
    processes: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    if redis_url:
        env["REDIS_URL"] = redis_url
    log = (base / "processes.log").open("ab")

    def spawn(spec: ProcessSpec) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(spec.argv, env={**env, **spec.env}, cwd=spec.cwd, stdout=log,
                                stderr=subprocess.STDOUT)
        processes.append(proc)
        return proc

    try:
        endpoints = []
        for name in ("b1", "b2", "b3"):
            client, peer, metrics = _free_port(), _free_port(), _free_port()
            endpoints.append(MemberEndpoints(name, f"http://127.0.0.1:{client}",
                                             f"http://127.0.0.1:{peer}",
                                             f"http://127.0.0.1:{metrics}"))
        for spec in member_specs(endpoints, str(base), []):
            spawn(spec)
        for e in endpoints:
            _wait_http(e.metrics_url + "/health", 60)
        web_port = _free_port()
        specs = platform_specs(endpoints, str(base), "127.0.0.1", web_port)
        for spec in specs.setup:
            subprocess.run(spec.argv, env={**env, **spec.env}, cwd=spec.cwd, check=True,
                           stdout=log, stderr=subprocess.STDOUT, timeout=300)
        web_spec = next(s for s in specs.services if s.name == "web")
        web = spawn(web_spec)
        url = f"http://127.0.0.1:{web_port}"
        _wait_http(url + "/healthz", 60, web)
        manage = [sys.executable, str(Path(web_spec.cwd or ".") / "manage.py"), "shell", "-c",
                  _TOKENS_SCRIPT]
        out = subprocess.run(manage, env={**env, **web_spec.env}, cwd=web_spec.cwd,
                             check=True, capture_output=True, text=True, timeout=120).stdout
        keys = json.loads(out.strip().splitlines()[-1])
        platform = Platform(url, keys["automation"], keys["sdk"])
        _request("POST", f"{url}/api/v1/projects/", platform.automation_key, {
            "key": PROJECT, "name": "Bench",
            "environments": [{"key": ENVIRONMENT, "name": "Production"}]})
        _request("POST", f"{url}/api/v1/projects/{PROJECT}/flags/", platform.automation_key, {
            "document": {"key": FLAG, "name": "Propagation", "kind": "boolean",
                         "variations": [True, False], "on": False, "off_variation": 1,
                         "fallthrough": {"variation": 0}}})
        yield platform
    finally:
        for proc in reversed(processes):
            proc.terminate()
        for proc in reversed(processes):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _worker(url: str, sdk_key: str, count: int, commands: Any, reports: Any) -> None:
    """A process running ``count`` AsyncClients; reports each revision once all clients saw it."""
    asyncio.run(_worker_main(url, sdk_key, count, commands, reports))


async def _worker_main(url: str, sdk_key: str, count: int, commands: Any, reports: Any) -> None:
    from flags.sdk import AsyncClient, FlagChange

    seen: dict[int, list[float]] = {}

    def on_change(change: FlagChange) -> None:
        if change.revision is None:
            return
        times = seen.setdefault(change.revision, [])
        times.append(time.monotonic())
        if len(times) == count:
            reports.put(("seen", change.revision))

    clients: list[AsyncClient] = []
    ready = 0
    while len(clients) < count:  # connect in small batches: a connection storm is not measured
        batch = []
        for _ in range(min(RAMP_BATCH, count - len(clients))):
            client = AsyncClient(url, sdk_key, f"{PROJECT}/{ENVIRONMENT}", events_interval=None,
                                 reconnect_initial=0.5, connect_timeout=30)
            client.on_change(on_change, FLAG)
            batch.append(client)
        ready += sum(await asyncio.gather(*(c.wait_until_ready(120) for c in batch)))
        clients.extend(batch)
    reports.put(("ready", ready))
    await asyncio.to_thread(commands.get)  # "stop"
    reports.put(("times", seen))
    await asyncio.gather(*(c.close() for c in clients))


def measure(platform: Platform, clients: int, saves: int, workers: int) -> list[float]:
    """Save-to-callback latencies (seconds) of every client for ``saves`` toggles."""
    context = multiprocessing.get_context("spawn")
    commands, reports = context.Queue(), context.Queue()
    shares = [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]
    shares = [s for s in shares if s]
    procs = [context.Process(target=_worker, args=(platform.url, platform.sdk_key, share,
                                                   commands, reports)) for share in shares]
    for proc in procs:
        proc.start()
    try:
        ready = 0
        for _ in procs:
            kind, value = reports.get(timeout=300)
            assert kind == "ready", kind
            ready += value
        if ready != clients:
            raise RuntimeError(f"only {ready} of {clients} clients became ready")
        toggle = (f"{platform.url}/api/v1/projects/{PROJECT}/environments/{ENVIRONMENT}/flags/"
                  f"{FLAG}/toggle/")
        started: dict[int, float] = {}
        on = True
        for _ in range(saves):
            t0 = time.monotonic()
            revision = int(_request("POST", toggle, platform.automation_key, {"on": on})["revision"])
            started[revision] = t0
            on = not on
            done = 0
            while done < len(procs):
                kind, value = reports.get(timeout=60)
                if kind == "seen" and value == revision:
                    done += 1
            time.sleep(0.05)
        for _ in procs:
            commands.put("stop")
        latencies: list[float] = []
        for _ in procs:
            kind, times = reports.get(timeout=120)
            assert kind == "times", kind
            for revision, stamps in times.items():
                if revision in started:
                    latencies.extend(t - started[revision] for t in stamps)
        return latencies
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def run(counts: tuple[int, ...] = (1, 100, 1000), saves: dict[int, int] | None = None,
        workers: int = 2, redis_url: str | None = None) -> dict[int, dict[str, float]]:
    """p50/p99 (ms) and sample counts per number of connected clients."""
    saves = saves or {1: 50, 100: 20, 1000: 10}
    out: dict[int, dict[str, float]] = {}
    with private_platform(redis_url) as platform:
        for count in counts:
            latencies = measure(platform, count, saves.get(count, 10),
                                workers=1 if count == 1 else workers)
            out[count] = {"p50_ms": percentile(latencies, 50) * 1000,
                          "p99_ms": percentile(latencies, 99) * 1000,
                          "max_ms": max(latencies) * 1000,
                          "mean_ms": statistics.fmean(latencies) * 1000,
                          "samples": float(len(latencies))}
    return out
