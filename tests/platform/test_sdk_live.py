"""The Python SDK and browser keys against the real platform: daphne, a 3-member core, real keys.

The web process is daphne in its own process (as in production), on the test
database, killed with SIGKILL mid-stream and restarted on the same port. SDK
and browser keys are real tokens (``flags.tokens``); saves go through the REST
API. Every wait polls a condition against a deadline; nothing is timed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from platform_support import boolean_flag, core_revision, etcdctl
from rest_framework.test import APIClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from flags.sdk import Client, ClientState, FlagChange
from flags.tokens import TokenKind, do_create_token
from tests.cluster.harness import Cluster, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it is true (the cluster harness's ``wait_until``)."""
    wait_until(lambda: bool(condition()) or None, timeout, what, interval=0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebProcess:
    """daphne serving the ASGI app on one port; ``kill`` (SIGKILL) and ``start`` again."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = _free_port()
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "flagstaff_platform.asgi:application"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("daphne did not answer /healthz within 60 s")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any, core_cluster: Cluster,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    """The web process (daphne) on the test database and the test core."""
    with django_db_blocker.unblock():
        from django.db import connection

        db = connection.settings_dict
    var_dir = tmp_path_factory.mktemp("sdk-web")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings_for_tests",
        "DATABASE_URL": (f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}"
                         f":{db['PORT'] or 5432}/{db['NAME']}"),
        "FLAGSTAFF_ENDPOINTS": core_cluster.endpoints,
        "FLAGSTAFF_VAR_DIR": str(var_dir),
        "FLAGSTAFF_LIVE_HEARTBEAT_SECONDS": "1",
        "SECRET_KEY": uuid.uuid4().hex * 2,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "platform")]),
    }
    env.pop("REDIS_URL", None)
    process = WebProcess(env, var_dir / "daphne.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(process.log_path.read_text()[-3000:])


@pytest.fixture
def key_owner(db: Any) -> Any:
    """The person who creates the keys: a superuser, so a key's reach is exactly its scope.

    (The web process caches content types across the test database's flushes,
    so guardian grants of later tests would be invisible to it; a superuser's
    access needs no grant rows.)
    """
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("sdk-owner", password="sdk-owner-pw")


def _key(owner: Any, kind: TokenKind, scope: str) -> str:
    _, secret = do_create_token(created_by=owner, name=f"{kind.value}-{uuid.uuid4().hex[:6]}",
                                kind=kind, scope=scope)
    return secret


def _client(web: WebProcess, key: str, environment: str) -> Client:
    return Client(web.url, key, environment, heartbeat_timeout=5.0, reconnect_initial=0.1,
                  reconnect_max=0.5, events_interval=None)


def _create_flag(api: APIClient, project: str, key: str = "sdk-flag") -> str:
    """A boolean flag, off (false), serving true to everyone when on; its key."""
    doc = boolean_flag(key, fallthrough={"variation": 0})
    created = api.post(f"/api/v1/projects/{project}/flags/", {"document": doc}, format="json")
    assert created.status_code == 201, created.content
    return key


def _toggle(api: APIClient, project: str, environment: str, flag: str, on: bool) -> int:
    response = api.post(f"/api/v1/projects/{project}/environments/{environment}/flags/{flag}/"
                        "toggle/", {"on": on}, format="json")
    assert response.status_code == 200, response.content
    return int(response.json()["revision"])


def test_sdk_survives_web_restart_and_resyncs_after_compaction(
        web: WebProcess, api: APIClient, key_owner: Any, project: str, core_cluster: Cluster) -> None:
    flag = _create_flag(api, project)
    key = _key(key_owner, TokenKind.SDK, f"{project}/staging")
    changes: list[FlagChange] = []
    client = _client(web, key, f"{project}/staging")
    try:
        client.on_change(changes.append, flag)
        assert client.wait_until_ready(DEADLINE)
        ctx = {"key": "user-1"}
        assert client.variation(flag, ctx, None) is False
        saved = [_toggle(api, project, "staging", flag, True)]
        wait_for(lambda: [c.revision for c in changes] == saved, "the live event")
        assert client.variation(flag, ctx, None) is True

        # The web process dies mid-stream: STALE, the last known value still served.
        web.kill()
        wait_for(lambda: client.status.state is ClientState.STALE, "STALE")
        detail = client.variation_detail(flag, ctx, None)
        assert (detail.value, detail.stale) == (True, True)
        for on in (False, True, False):  # saved while no web process runs
            saved.append(_toggle(api, project, "staging", flag, on))
        web.start()
        wait_for(lambda: client.status.state is ClientState.READY, "READY after the restart")
        assert "resume" in client.status.message
        wait_for(lambda: len(changes) >= len(saved), "the missed events")
        assert [c.revision for c in changes] == saved  # none missed, none twice, in order
        assert client.variation(flag, ctx, None) is False

        # Down again; the core compacts past the client's revision: a full resync.
        web.kill()
        wait_for(lambda: client.status.state is ClientState.STALE, "STALE again")
        for on in (True, False, True):  # history the client misses, then compacted away
            last = _toggle(api, project, "staging", flag, on)
        etcdctl(core_cluster, "compaction", str(core_revision()))
        web.start()
        wait_for(lambda: client.status.state is ClientState.READY, "READY after compaction")
        assert "snapshot" in client.status.message
        wait_for(lambda: client.variation(flag, ctx, None) is True, "the resynced value")
        assert changes[-1].revision is not None and changes[-1].revision >= last
        assert client.core.store.revision is not None and client.core.store.revision >= last
    finally:
        client.close()
        if web.proc is None or web.proc.poll() is not None:
            web.start()


def test_sdk_key_sees_only_its_environment(web: WebProcess, api: APIClient, key_owner: Any,
                                           project: str) -> None:
    flag = _create_flag(api, project)
    key = _key(key_owner, TokenKind.SDK, f"{project}/staging")
    _toggle(api, project, "production", flag, True)
    staging = _client(web, key, f"{project}/staging")
    production = _client(web, key, f"{project}/production")
    browser = _client(web, _key(key_owner, TokenKind.BROWSER, f"{project}/staging"),
                      f"{project}/staging")
    try:
        assert staging.wait_until_ready(DEADLINE)
        assert staging.all_flags({"key": "u"}) == {flag: False}  # off in staging, on in production
        wait_for(lambda: production.status.state is ClientState.ERROR, "production refused")
        assert "does not serve" in production.status.message
        assert production.variation_detail(flag, {"key": "u"}, "d").value == "d"
        assert production.core.store.data is None  # not one production document arrived
        # a browser key may evaluate, never read documents: refused on /ws/v1/flags/
        wait_for(lambda: browser.status.state is ClientState.ERROR, "browser key refused")
        assert browser.core.store.data is None
    finally:
        for client in (staging, production, browser):
            client.close()


def test_browser_key_gets_evaluated_values_never_rules(web: WebProcess, api: APIClient,
                                                       key_owner: Any, project: str) -> None:
    secret_domain = "@rule-secret.example"
    doc = boolean_flag("beta-banner", on=True, rules=[
        {"id": "insiders", "clauses": [{"attribute": "email", "operator": "ends_with",
                                        "values": [secret_domain]}], "variation": 0}])
    created = api.post(f"/api/v1/projects/{project}/flags/", {"document": doc}, format="json")
    assert created.status_code == 201, created.content
    browser_key = _key(key_owner, TokenKind.BROWSER, f"{project}/staging")
    ws_url = f"ws://127.0.0.1:{web.port}/ws/v1/values/?key={browser_key}"
    # a page of another origin may connect: browser keys carry no cookies
    with connect(ws_url, origin="https://shop.example.com", open_timeout=DEADLINE) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"type": "identify", "context": {"email": "no key"}}))
        refused = json.loads(ws.recv(timeout=DEADLINE))
        assert (refused["type"], refused["code"]) == ("error", "bad_request")
        ws.send(json.dumps({"type": "identify",
                            "context": {"key": "u1", "email": f"ann{secret_domain}"}}))
        frame = ws.recv(timeout=DEADLINE)
        values = json.loads(frame)
        assert values["type"] == "values"
        assert values["values"]["beta-banner"] == {
            "value": True, "variation": 0, "reason": {"kind": "RULE_MATCH"}}
        for leak in (secret_domain, "insiders", "clauses", "rules", "ends_with", "variations"):
            assert leak not in str(frame), leak
        _toggle(api, project, "staging", "beta-banner", False)
        while True:
            message = json.loads(ws.recv(timeout=DEADLINE))
            if message["type"] == "changed":
                break
            assert message["type"] == "heartbeat"
        assert message["values"] == {"beta-banner": {"value": False, "variation": 1,
                                                     "reason": {"kind": "OFF"}}}
        # another user of the same page: identify again, values for the new context
        ws.send(json.dumps({"type": "identify", "context": {"key": "u2"}}))
        while (message := json.loads(ws.recv(timeout=DEADLINE)))["type"] != "values":
            pass
        assert message["values"]["beta-banner"]["value"] is False
    # an SDK key (or no key) is refused on the browser endpoint
    sdk_key = _key(key_owner, TokenKind.SDK, f"{project}/staging")
    for url in (f"ws://127.0.0.1:{web.port}/ws/v1/values/?key={sdk_key}",
                f"ws://127.0.0.1:{web.port}/ws/v1/values/"):
        with pytest.raises(InvalidStatus):
            connect(url, open_timeout=DEADLINE).close()


def test_evaluation_counts_reach_the_platform(web: WebProcess, api: APIClient, key_owner: Any,
                                              project: str) -> None:
    from flags import keyspace
    from flags.core import core

    flag = _create_flag(api, project)
    key = _key(key_owner, TokenKind.SDK, f"{project}/staging")
    client = Client(web.url, key, f"{project}/staging", events_interval=3600,
                    heartbeat_timeout=5.0, reconnect_initial=0.1)
    try:
        assert client.wait_until_ready(DEADLINE)
        for i in range(7):
            client.variation(flag, {"key": f"u{i}"}, None)
        client.variation("no-such-flag", {"key": "u"}, None)  # not counted: unknown to the store
    finally:
        client.close()  # sends the batch
    record = core().get(keyspace.evaluation_key(project, "staging", flag))
    assert record is not None and record.json()["count"] == 7
    assert core().get(keyspace.evaluation_key(project, "staging", "no-such-flag")) is None
