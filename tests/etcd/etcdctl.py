"""Running the real `etcdctl` (v3 API) against an endpoint list, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

ETCDCTL = "/usr/bin/etcdctl"


@dataclass
class Result:
    """One etcdctl run: exit code and both streams."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def etcdctl(endpoints: str, *args: str, stdin: str | None = None, timeout: float = 30.0) -> Result:
    """Run ``etcdctl --endpoints=<endpoints> <args>``; never raises on a non-zero exit."""
    env = {**os.environ, "ETCDCTL_API": "3"}
    proc = subprocess.run(
        [ETCDCTL, f"--endpoints={endpoints}", "--command-timeout=10s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def ok(endpoints: str, *args: str, stdin: str | None = None) -> str:
    """Run etcdctl and return stdout, failing the test with stderr on a non-zero exit."""
    res = etcdctl(endpoints, *args, stdin=stdin)
    assert res.returncode == 0, f"etcdctl {' '.join(args)} failed: {res.stderr}"
    return res.stdout
