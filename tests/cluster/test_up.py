"""`flagstaff up`: three members start, elect a leader, and all stop cleanly on SIGTERM."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import ProcessRegistry, http, port_is_free, wait_until

pytestmark = pytest.mark.timeout(120)

OFFSETS = (0, 20000, 30000)


def _free_base_port() -> int:
    """A base port whose nine derived ports (see consensus.up) are all free now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, 35000)
        if all(port_is_free(base + o + k) for o in OFFSETS for k in range(3)):
            return base
    raise AssertionError("no free base port found")


def test_up_starts_three_members_and_stops_them_cleanly(
    tmp_path: Path, processes: ProcessRegistry
) -> None:
    base = _free_base_port()
    output = tmp_path / "up.log"
    proc = processes.popen(
        [
            sys.executable, "-m", "consensus.cli", "up", "--no-platform", "--base-port", str(base),
            "--node-arg=--heartbeat-interval=50", "--node-arg=--election-timeout=500",
        ],
        output,
        cwd=tmp_path,
    )

    def ready() -> bool:
        assert proc.poll() is None, output.read_text()
        return "cluster ready, leader" in output.read_text()

    wait_until(ready, 30, "`flagstaff up` to report a leader")
    for offset in OFFSETS:
        code, body = http("GET", f"http://127.0.0.1:{base + offset + 2}/health")
        assert (code, body) == (200, {"health": "true", "reason": ""})
    for name in ("m1", "m2", "m3"):
        assert (tmp_path / "var" / "members" / name / "wal").is_dir()

    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 0, output.read_text()
    except subprocess.TimeoutExpired:
        raise AssertionError(output.read_text()) from None
    text = output.read_text()
    assert "stopped (m1 exit 0, m2 exit 0, m3 exit 0)" in text, text
    for offset in OFFSETS:
        assert port_is_free(base + offset + 1), "a member still holds its peer port"
    shutil.rmtree(tmp_path / "var")  # each WAL preallocates 64 MiB
