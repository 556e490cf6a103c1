"""Structured logs: ``flagstaff node --log-format=json`` and the platform's ``LOG_FORMAT=json``.

Each process is run as an operator would run it; every line it writes to
stderr must then be one JSON object with the documented fields.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cluster.harness import ROOT, free_port, wait_until


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no log lines"
    parsed = [json.loads(line) for line in lines]  # fails on any non-JSON line
    for record in parsed:
        assert {"ts", "level", "logger", "msg"} <= set(record), record
        assert record["ts"].endswith("Z") and "T" in record["ts"]
    return parsed


def test_node_writes_one_json_object_per_line(tmp_path: Path) -> None:
    peer, client, metrics = free_port(), free_port(), free_port()
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consensus.cli", "node", "--name", "solo",
             "--data-dir", str(tmp_path / "data"),
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-metrics-urls", f"http://127.0.0.1:{metrics}",
             "--heartbeat-interval", "50", "--election-timeout", "500", "--log-format=json"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )
    try:
        wait_until(lambda: "leader is now" in log_path.read_text(), 30, "the member to elect itself")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    records = json_lines(log_path.read_text())
    assert all(r["member"] == "solo" for r in records)
    assert {r["level"] for r in records} <= {"debug", "info", "warn", "error"}
    assert any(r["logger"] == "consensus.server.member" and "started" in r["msg"] for r in records)


def test_platform_writes_json_with_log_format_json(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings",
        "FLAGSTAFF_VAR_DIR": str(tmp_path),
        "LOG_FORMAT": "json",
        "PYTHONPATH": f"{ROOT / 'platform'}{os.pathsep}{ROOT}",
    }
    code = ("import logging; logging.getLogger('flags.example').warning('hello %s', 'operator', "
            "extra={'project': 'shop'})")
    proc = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stderr)
    (hello,) = [r for r in records if r["logger"] == "flags.example"]
    assert hello["msg"] == "hello operator" and hello["level"] == "warn"
    assert hello["project"] == "shop"
