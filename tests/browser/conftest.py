"""Fixtures of the browser tests: a real core, the web process under daphne, headless Chromium.

The whole stack runs as in production, on one machine: a 3-member core
(``tests/cluster/harness.py``), the Django ASGI app served by **daphne** in
its own process (Channels-ready, unlike pytest-django's WSGI ``live_server``)
on pytest-django's test database, and Debian's ``/usr/bin/chromium`` driven
by Playwright (Playwright's own browser download is never used).

Tests that log in need the ``transactional_db`` fixture, so the users they
create are committed and visible to the daphne process.
"""

from __future__ import annotations

import os
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

from tests.cluster.harness import Cluster

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCREENSHOTS = ROOT / "var" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def web_server(
    django_db_setup: Any, django_db_blocker: Any, core_cluster: Cluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """daphne serving the ASGI app on the test database and the test core; its base URL."""
    with django_db_blocker.unblock():
        from django.db import connection

        db = connection.settings_dict
    port = _free_port()
    var_dir = tmp_path_factory.mktemp("web-var")
    env = {
        **os.environ,
        # The test settings: the same password hasher as the test process that creates users.
        "DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings_for_tests",
        "DATABASE_URL": (f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}"
                         f":{db['PORT'] or 5432}/{db['NAME']}"),
        "FLAGSTAFF_ENDPOINTS": core_cluster.endpoints,
        "FLAGSTAFF_VAR_DIR": str(var_dir),
        "SECRET_KEY": uuid.uuid4().hex * 2,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "platform")]),
    }
    log = (var_dir / "daphne.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "flagstaff_platform.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daphne exited: {(var_dir / 'daphne.log').read_text()}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("daphne did not answer /healthz within 30 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print((var_dir / "daphne.log").read_text()[-4000:])


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright.

    Playwright's sync API runs an event loop in this thread while it is active,
    so Django's ORM and the core gateway's blocking calls refuse to run here:
    request this fixture after the ones that create users and records, and read
    the core from the test with ``browser_support.off_loop``.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def new_key() -> Callable[[str], str]:
    return lambda prefix="p": f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def screenshot() -> Callable[[Any, str], Path]:
    """``screenshot(page, name)``: a full-page PNG under var/screenshots/ (for people to look at)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
