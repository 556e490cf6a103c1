"""Helpers of the platform tests: flag documents, grants, the core's revision, the real etcdctl."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from flags.core import core
from tests.cluster.harness import Cluster

ETCDCTL = "/usr/bin/etcdctl"


def boolean_flag(key: str, **overrides: Any) -> dict[str, Any]:
    """A valid boolean flag document (variations [true, false], off, serving false)."""
    doc: dict[str, Any] = {
        "key": key,
        "name": f"Flag {key}",
        "kind": "boolean",
        "variations": [True, False],
        "on": False,
        "off_variation": 1,
        "fallthrough": {"variation": 1},
        "tags": ["checkout"],
    }
    doc.update(overrides)
    return doc


def grant_editor(person: Any, prefix: str = "/") -> None:
    """Give ``person`` view, edit and delete on ``prefix`` (the whole key space by default)."""
    from flags.namespaces import do_grant, ensure_namespace
    from flags.permissions import Perm

    do_grant(ensure_namespace(prefix), [Perm.READ, Perm.WRITE, Perm.DELETE], to=person, by=None)


def core_revision() -> int:
    """The core's current store revision: unchanged means nothing was written."""
    return core().list("/", keys_only=True).revision


def etcdctl(cluster: Cluster, *args: str) -> str:
    """Run the real etcdctl against the cluster; its stdout."""
    proc = subprocess.run(
        [ETCDCTL, f"--endpoints={cluster.endpoints}", "--command-timeout=10s", *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
