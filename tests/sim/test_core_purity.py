"""The Raft core stays sans-I/O: no event loop, sockets, threads, clock, global randomness or files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RAFT = Path(__file__).resolve().parents[2] / "consensus" / "raft"

FORBIDDEN_MODULES = {
    "asyncio",
    "socket",
    "threading",
    "time",
    "random",
    # file and OS access
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "mmap",
    "fcntl",
    "select",
    "selectors",
    "subprocess",
    "multiprocessing",
    "concurrent",
    "datetime",
}
FORBIDDEN_NAMES = {"open", "input", "print", "__import__", "exec", "eval"}


def _sources() -> list[Path]:
    files = sorted(RAFT.glob("*.py"))
    assert files, f"no sources under {RAFT}"
    return files


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):  # every import, at module level or nested anywhere
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            if node.level == 0 and root in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(f"line {node.lineno}: uses {node.id}()")
        elif isinstance(node, ast.Attribute) and node.attr in {"importlib", "import_module"}:
            found.append(f"line {node.lineno}: dynamic import via {node.attr}")
    return found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_raft_module_is_sans_io(path: Path) -> None:
    assert _violations(path) == []


def test_the_scan_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os.path\n"
        "def f():\n"
        "    import time\n"
        "    from random import random\n"
        "    return open('x')\n"
    )
    found = _violations(bad)
    assert len(found) == 4, found
