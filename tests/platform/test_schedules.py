"""Scheduled changes and progressive rollouts, carried out by the scheduler task and real Celery workers.

Every path a user relies on: a scheduled edit applies at its time (and not
before); a progressive rollout advances step by step, pauses and resumes; a
failing health signal (a webhook's answer, a Prometheus query) rolls it back;
two Celery workers ticking at once apply each step exactly once; a worker
SIGKILLed just before or just after a step's commit neither skips nor repeats
a step. The flag's ``version`` (one more on every write of its document) is
the witness: it counts the writes the scheduler made.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from rest_framework.test import APIClient

from flags.schedules import read_schedule
from flags.tasks import run_schedules
from tests.cluster.harness import ROOT, Cluster, ProcessRegistry, wait_until

pytestmark = pytest.mark.timeout(180)


def _flag(api: APIClient, project: str, env: str, flag: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/projects/{project}/environments/{env}/flags/{flag}/")
    assert response.status_code == 200, response.content
    return response.json()


def _document(api: APIClient, project: str, env: str, flag: str) -> dict[str, Any]:
    body = _flag(api, project, env, flag)
    return body.get("document", body)


def _percentage(document: dict[str, Any]) -> float:
    fallthrough = document["fallthrough"]
    if "variation" in fallthrough:
        return 100.0 if fallthrough["variation"] == 0 else 0.0
    return sum(s["weight"] for s in fallthrough["rollout"]["variations"] if s["variation"] == 0) / 1000


def _schedules_url(project: str, env: str, flag: str) -> str:
    return f"/api/v1/projects/{project}/environments/{env}/flags/{flag}/schedules/"


def _create(api: APIClient, project: str, flag: str, body: dict[str, Any],
            env: str = "staging") -> dict[str, Any]:
    response = api.post(_schedules_url(project, env, flag), body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _schedule(api: APIClient, project: str, flag: str, schedule_id: str,
              env: str = "staging") -> dict[str, Any]:
    response = api.get(_schedules_url(project, env, flag) + f"{schedule_id}/")
    assert response.status_code == 200, response.content
    return response.json()


def _steer(api: APIClient, project: str, flag: str, schedule_id: str, action: str,
           env: str = "staging") -> Any:
    return api.post(_schedules_url(project, env, flag) + f"{schedule_id}/{action}/", {}, format="json")


def _tick(project: str) -> list[str]:
    """One scheduler tick, as beat triggers it (limited to this test's project)."""
    return run_schedules(prefix=f"/schedules/{project}/")


def _set_rollout(api: APIClient, project: str, flag: str, percentage: float) -> None:
    response = api.post(f"/api/v1/projects/{project}/environments/staging/flags/{flag}/rollout/",
                        {"percentage": percentage}, format="json")
    assert response.status_code == 200, response.content


def _step_events(schedule: dict[str, Any]) -> list[float]:
    return [e["percentage"] for e in schedule["history"] if e["event"] == "step"]


# -- in-process ticks ---------------------------------------------------------------------------


def test_a_scheduled_edit_applies_at_its_time_and_only_once(api: APIClient, project: str,
                                                            flag: str) -> None:
    at = time.time() + 1.5
    created = _create(api, project, flag, {"kind": "once", "at": at, "change": {"on": True}})
    assert created["state"] == "pending"
    before = _document(api, project, "staging", flag)
    assert before["on"] is False

    _tick(project)  # before its time: nothing happens
    assert _document(api, project, "staging", flag)["version"] == before["version"]

    def applied() -> bool:
        _tick(project)
        return _document(api, project, "staging", flag)["on"] is True

    wait_until(applied, 20, "the scheduled toggle to apply", interval=0.2)
    assert time.time() >= at
    after = _document(api, project, "staging", flag)
    assert after["version"] == before["version"] + 1
    assert after.get("updated_by", "system:scheduler") == "system:scheduler"
    assert _document(api, project, "production", flag)["on"] is False  # one environment only
    schedule = _schedule(api, project, flag, created["id"])
    assert schedule["state"] == "completed"

    _tick(project)
    _tick(project)
    assert _document(api, project, "staging", flag)["version"] == after["version"]


def test_a_scheduled_document_replacement_and_a_percentage(api: APIClient, project: str,
                                                           flag: str) -> None:
    doc = _document(api, project, "production", flag)
    replacement = {k: v for k, v in doc.items()
                   if k not in ("salt", "created_at", "updated_at", "version", "updated_by")}
    replacement["description"] = "replaced on schedule"
    past = time.time() - 1
    _create(api, project, flag, {"kind": "once", "at": past, "change": {"document": replacement}},
            env="production")
    _create(api, project, flag, {"kind": "once", "at": past, "change": {"percentage": 12.5}})
    _tick(project)
    assert _document(api, project, "production", flag)["description"] == "replaced on schedule"
    assert _document(api, project, "production", flag)["salt"] == doc["salt"]
    assert _percentage(_document(api, project, "staging", flag)) == 12.5


def test_schedules_are_validated_when_created(api: APIClient, project: str, flag: str) -> None:
    url = _schedules_url(project, "staging", flag)
    bad = [
        {"kind": "sometime"},
        {"kind": "once", "at": "tomorrow", "change": {"on": True}},
        {"kind": "once", "at": time.time(), "change": {"on": "yes"}},
        {"kind": "once", "at": time.time(), "change": {"percentage": 101}},
        {"kind": "once", "at": time.time(), "change": {"document": {"kind": "nonsense"}}},
        {"kind": "progressive", "strategy": "sideways"},
        {"kind": "progressive", "strategy": "exponential", "growth_factor": 1},
        {"kind": "progressive", "health": {"type": "webhook", "url": "ftp://x"}},
    ]
    for body in bad:
        response = api.post(url, body, format="json")
        assert response.status_code == 400, (body, response.content)
    assert api.get(url).json() == []


def test_a_progressive_rollout_advances_step_by_step_with_pause_and_resume(
    api: APIClient, project: str, flag: str,
) -> None:
    start = _document(api, project, "staging", flag)
    created = _create(api, project, flag, {
        "kind": "progressive", "strategy": "linear", "step_percentage": 25, "bake_seconds": 0.3,
    })
    assert created["steps"] == [25, 50, 75, 100]
    seen: list[float] = []

    def advance_to(percentage: float) -> None:
        def reached() -> bool:
            _tick(project)
            value = _percentage(_document(api, project, "staging", flag))
            if not seen or seen[-1] != value:
                seen.append(value)
            return value == percentage
        wait_until(reached, 20, f"the rollout to reach {percentage}%", interval=0.05)

    advance_to(25)
    advance_to(50)
    paused = _steer(api, project, flag, created["id"], "pause")
    assert paused.status_code == 200, paused.content
    assert paused.json()["state"] == "paused"
    version = _document(api, project, "staging", flag)["version"]
    deadline = time.monotonic() + 1.0  # well past the 0.3 s bake: a paused rollout stays put
    while time.monotonic() < deadline:
        _tick(project)
    assert _document(api, project, "staging", flag)["version"] == version
    assert _percentage(_document(api, project, "staging", flag)) == 50
    assert _steer(api, project, flag, created["id"], "pause").status_code == 400

    assert _steer(api, project, flag, created["id"], "resume").json()["state"] == "running"
    advance_to(100)
    wait_until(lambda: _tick(project) is not None and _schedule(
        api, project, flag, created["id"])["state"] == "completed", 20, "the rollout to complete")
    schedule = _schedule(api, project, flag, created["id"])
    assert seen == [25, 50, 75, 100]
    assert _step_events(schedule) == [25, 50, 75, 100]
    assert schedule["baseline"] == 0
    assert _document(api, project, "staging", flag)["version"] == start["version"] + 4


class _Signal:
    """A local HTTP server answering health checks: healthy for ``healthy_calls`` calls, then not."""

    def __init__(self, healthy_calls: int, kind: str) -> None:
        self.calls: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                outer.calls.append({"method": self.command, "path": self.path, "body": body})
                healthy = len(outer.calls) <= healthy_calls
                if kind == "webhook":
                    code = 200 if healthy else 500
                    payload: dict[str, Any] = {"healthy": healthy}
                else:
                    code, value = 200, ("0.001" if healthy else "0.5")
                    payload = {"status": "success", "data": {"resultType": "vector", "result": [
                        {"metric": {}, "value": [time.time(), value]}]}}
                raw = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health?query=error_ratio"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("kind", ["webhook", "prometheus"])
def test_a_failing_health_signal_rolls_the_rollout_back(api: APIClient, project: str, flag: str,
                                                        kind: str) -> None:
    _set_rollout(api, project, flag, 5)
    signal_server = _Signal(healthy_calls=1, kind=kind)
    try:
        created = _create(api, project, flag, {
            "kind": "progressive", "strategy": "exponential", "step_percentage": 10,
            "growth_factor": 2, "bake_seconds": 0.2,
            "health": {"type": kind, "url": signal_server.url, "max": 0.1},
        })
        assert created["steps"] == [10, 20, 40, 80, 100]

        def finished() -> dict[str, Any] | None:
            _tick(project)
            schedule = _schedule(api, project, flag, created["id"])
            return schedule if schedule["state"] not in ("pending", "running") else None

        schedule = wait_until(finished, 20, "the rollout to end")
    finally:
        signal_server.close()
    # Step 1 (10%), healthy check, step 2 (20%), failing check: back to the 5% it started from.
    assert schedule["state"] == "rolled_back"
    assert _step_events(schedule) == [10, 20]
    assert "health signal failed" in schedule["last_error"]
    assert _percentage(_document(api, project, "staging", flag)) == 5
    assert len(signal_server.calls) == 2
    if kind == "webhook":
        assert signal_server.calls[0]["body"]["flag"] == flag
        assert signal_server.calls[0]["body"]["percentage"] == 10


def test_rolling_back_by_hand(api: APIClient, project: str, flag: str) -> None:
    created = _create(api, project, flag, {"kind": "progressive", "step_percentage": 30,
                                           "bake_seconds": 3600})
    _tick(project)
    assert _percentage(_document(api, project, "staging", flag)) == 30
    response = _steer(api, project, flag, created["id"], "rollback")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "rolled_back"
    assert _percentage(_document(api, project, "staging", flag)) == 0
    assert _steer(api, project, flag, created["id"], "resume").status_code == 400


def test_the_flag_page_schedules_pauses_and_cancels(api: APIClient, user: Any, project: str,
                                                   flag: str) -> None:
    from django.test import Client

    web = Client()
    web.force_login(user)
    page_url = f"/projects/{project}/flags/{flag}/?env=production"
    page = web.get(page_url).content.decode()
    assert "Nothing scheduled." in page
    base = f"/projects/{project}/environments/production/flags/{flag}/schedules/"
    response = web.post(base, {"kind": "once", "at": "2099-01-01T10:00:00", "change": "on"})
    assert response.status_code == 302
    response = web.post(base, {"kind": "progressive", "strategy": "exponential",
                               "step_percentage": "1", "growth_factor": "4", "bake_seconds": "600",
                               "health_type": "", "health_url": "", "health_max": "0"})
    assert response.status_code == 302
    listed = api.get(_schedules_url(project, "production", flag)).json()
    assert [s["kind"] for s in listed] == ["once", "progressive"] or \
        sorted(s["kind"] for s in listed) == ["once", "progressive"]
    once = next(s for s in listed if s["kind"] == "once")
    assert once["next_at"] == 4070944800.0 and once["change"] == {"on": True}
    rollout = next(s for s in listed if s["kind"] == "progressive")
    assert rollout["steps"] == [1, 4, 16, 64, 100]
    page = web.get(page_url).content.decode()
    assert f'data-schedule="{once["id"]}" data-state="pending"' in page
    assert "2099-01-01 10:00:00 UTC" in page
    assert web.post(base + f"{once['id']}/pause/").status_code == 302
    assert web.post(base + f"{rollout['id']}/cancel/").status_code == 302
    page = web.get(page_url).content.decode()
    assert f'data-schedule="{once["id"]}" data-state="paused"' in page
    assert f'data-schedule="{rollout["id"]}" data-state="cancelled"' in page
    assert web.post(base + f"{once['id']}/explode/").status_code == 404


def test_racing_ticks_in_two_threads_apply_each_step_once(api: APIClient, project: str,
                                                          flag: str) -> None:
    start = _document(api, project, "staging", flag)
    created = _create(api, project, flag, {"kind": "progressive", "step_percentage": 10,
                                           "bake_seconds": 0})
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    outcomes: list[str] = []

    def worker() -> None:
        try:
            barrier.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                outcomes.extend(_tick(project))
                # (the API client needs the test's database transaction: not from a thread)
                if read_schedule(project, "staging", flag, created["id"]).state == "completed":
                    return
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert errors == []
    schedule = _schedule(api, project, flag, created["id"])
    assert schedule["state"] == "completed"
    assert _step_events(schedule) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert _document(api, project, "staging", flag)["version"] == start["version"] + 10
    # Each worker reports what it did: ten steps and one completion between them, no more.
    assert sum(": step " in o for o in outcomes) == 10
    assert sum(o.endswith(": completed") for o in outcomes) == 1


# -- real Celery workers ------------------------------------------------------------------------


class Workers:
    """Celery worker processes on a private filesystem broker, and an app that sends them ticks."""

    def __init__(self, base: Path, cluster: Cluster, registry: ProcessRegistry) -> None:
        self.base, self.cluster, self.registry = base, cluster, registry
        queue = base / "celery" / "queue"
        # Not the current app: shared tasks must stay bound to the platform's app for later tests.
        self.app = Celery("flagstaff-test", broker="filesystem://", set_as_current=False)
        self.app.conf.broker_transport_options = {
            "data_folder_in": str(queue), "data_folder_out": str(queue),
            "control_folder": str(base / "celery" / "control"),
            "processed_folder": str(base / "celery" / "processed"), "store_processed": False,
        }
        for folder in ("queue", "control", "processed"):
            (base / "celery" / folder).mkdir(parents=True, exist_ok=True)

    def _env(self) -> dict[str, str]:
        return {
            "FLAGSTAFF_ENDPOINTS": self.cluster.endpoints,
            "FLAGSTAFF_VAR_DIR": str(self.base),
            "DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings",
            "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}",
            "PYTHONUNBUFFERED": "1",
        }

    def spawn(self, name: str, queues: str, extra_env: dict[str, str] | None = None) -> Any:
        """Start a worker consuming ``queues`` (comma-separated); see :meth:`ready`."""
        env = {**os.environ, **self._env(), **(extra_env or {})}
        env.pop("REDIS_URL", None)
        env.pop("DATABASE_URL", None)
        return self.registry.popen(
            [sys.executable, "-m", "celery", "-A", "flagstaff_platform", "worker", "--pool=solo",
             "-Q", queues, "-n", f"{name}@%h", "--loglevel=INFO", "--without-heartbeat",
             "--without-mingle", "--without-gossip"],
            self.base / f"{name}.log", env=env)

    def ready(self, name: str, proc: Any) -> Any:
        log = self.base / f"{name}.log"
        wait_until(lambda: "ready." in log.read_text(errors="replace") or proc.poll() is not None,
                   60, f"celery worker {name} to start")
        assert proc.poll() is None, log.read_text(errors="replace")
        return proc

    def start(self, name: str, queues: str, extra_env: dict[str, str] | None = None) -> Any:
        return self.ready(name, self.spawn(name, queues, extra_env))

    def start_beat(self, extra_env: dict[str, str]) -> Any:
        """Celery beat with the platform's schedule (its ticks go to the default queue)."""
        env = {**os.environ, **self._env(), **extra_env}
        log = self.base / "beat.log"
        proc = self.registry.popen(
            [sys.executable, "-m", "celery", "-A", "flagstaff_platform", "beat", "--loglevel=INFO",
             "-s", str(self.base / "beat-schedule")], log, env=env)
        wait_until(lambda: "beat: Starting..." in log.read_text(errors="replace")
                   or proc.poll() is not None, 60, "celery beat to start")
        assert proc.poll() is None, log.read_text(errors="replace")
        return proc

    def tick(self, project: str, queue: str = "schedules") -> None:
        self.app.send_task("flags.tasks.run_schedules", kwargs={"prefix": f"/schedules/{project}/"},
                           queue=queue)

    def log(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def workers(core_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """Two healthy Celery workers consuming the ``schedules`` queue (and beat's default one)."""
    registry = ProcessRegistry()
    pool = Workers(tmp_path_factory.mktemp("celery"), core_cluster, registry)
    try:
        started = {name: pool.spawn(name, "schedules,celery") for name in ("w1", "w2")}
        for name, proc in started.items():
            pool.ready(name, proc)
        yield pool
    finally:
        registry.kill_all()


def _wait_for_step(api: APIClient, project: str, flag: str, schedule_id: str,
                   done: Callable[[dict[str, Any]], bool], what: str,
                   tick: Callable[[], None]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        tick()
        schedule = _schedule(api, project, flag, schedule_id)
        return schedule if done(schedule) else None
    return wait_until(probe, 60, what, interval=0.1)


def test_two_workers_at_once_apply_each_step_once(api: APIClient, project: str, flag: str,
                                                 workers: Workers) -> None:
    start = _document(api, project, "staging", flag)
    created = _create(api, project, flag, {"kind": "progressive", "step_percentage": 20,
                                           "bake_seconds": 0})

    def burst() -> None:  # both workers get ticks at the same time, over and over
        for _ in range(4):
            workers.tick(project)

    schedule = _wait_for_step(api, project, flag, created["id"],
                              lambda s: s["state"] == "completed", "the rollout to complete", burst)
    assert _step_events(schedule) == [20, 40, 60, 80, 100]
    assert _document(api, project, "staging", flag)["version"] == start["version"] + 5
    assert _percentage(_document(api, project, "staging", flag)) == 100
    logs = workers.log("w1") + workers.log("w2")
    assert logs.count("run_schedules") > 0 and "step 1: 20.0%" in logs


@pytest.mark.parametrize("crash", ["before-commit", "after-commit"])
def test_a_worker_killed_mid_step_neither_skips_nor_repeats(
    api: APIClient, project: str, flag: str, workers: Workers, crash: str,
) -> None:
    start = _document(api, project, "staging", flag)
    created = _create(api, project, flag, {"kind": "progressive", "step_percentage": 50,
                                           "bake_seconds": 0})
    queue = f"crash-{crash}"
    doomed = workers.start(f"doomed-{crash}", queue, {"FLAGSTAFF_SCHEDULER_CRASH": crash})
    workers.tick(project, queue=queue)
    assert doomed.wait(timeout=60) == -signal.SIGKILL
    schedule = _schedule(api, project, flag, created["id"])
    document = _document(api, project, "staging", flag)
    if crash == "before-commit":  # decided, never committed: nothing happened
        assert schedule["step"] == 0 and document["version"] == start["version"]
    else:  # committed, then died: the step happened, flag and progress together
        assert schedule["step"] == 1 and document["version"] == start["version"] + 1
        assert _percentage(document) == 50

    schedule = _wait_for_step(api, project, flag, created["id"],
                              lambda s: s["state"] == "completed", "the healthy workers to finish",
                              lambda: workers.tick(project))
    assert _step_events(schedule) == [50, 100]
    assert _document(api, project, "staging", flag)["version"] == start["version"] + 2


def test_beat_and_a_worker_carry_out_a_schedule_with_nobody_ticking(
    api: APIClient, project: str, flag: str, workers: Workers,
) -> None:
    """The deployed shape: beat ticks ``run_schedules`` on its own, a worker runs it."""
    at = time.time() + 1
    created = _create(api, project, flag, {"kind": "once", "at": at, "change": {"on": True}})
    beat = workers.start_beat({"FLAGSTAFF_SCHEDULER_TICK_SECONDS": "0.5",
                               "FLAGSTAFF_WEBHOOK_TICK_SECONDS": "3600",
                               "FLAGSTAFF_BACKUP_INTERVAL_SECONDS": "0"})
    try:
        wait_until(lambda: _document(api, project, "staging", flag)["on"] is True, 60,
                   "beat's tick to apply the scheduled change")
    finally:
        os.killpg(beat.pid, signal.SIGKILL)
        beat.wait(timeout=10)
    assert _schedule(api, project, flag, created["id"])["state"] == "completed"
    assert "flags.tasks.run_schedules" in workers.log("beat")
