"""The engine package: no Django, a documented public API, a runnable benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import flags.engine
from flags.engine import bench

ROOT = Path(__file__).resolve().parents[2]


def test_the_engine_imports_no_django_and_nothing_outside_the_standard_library() -> None:
    code = (
        "import sys, flags.engine, flags.engine.bench;"
        "mods = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'django', 'rest_framework', 'channels', 'celery', 'consensus', 'grpc'});"
        "print(mods)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_every_engine_module_has_a_docstring() -> None:
    for path in sorted((ROOT / "flags" / "engine").glob("*.py")):
        text = path.read_text()
        assert text.startswith('"""'), path.name


def test_public_api() -> None:
    for name in flags.engine.__all__:
        assert getattr(flags.engine, name) is not None, name


def test_the_benchmark_runs() -> None:
    rates = bench.run(n=200, repeat=1)
    assert set(rates) >= {"boolean flag, 25% rollout", "5-rule flag, no rule matches (fallthrough)"}
    assert all(rate > 0 for rate in rates.values())
    assert bench.main(["--n", "100", "--repeat", "1", "--json"]) == 0
