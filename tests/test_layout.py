"""The repository layout promises that tools and people rely on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_platform_folder_does_not_shadow_the_standard_library() -> None:
    # With platform/ on sys.path (as manage.py, pytest and packaging put it),
    # `import platform` must still be Python's own module.
    code = (
        "import sys; sys.path.insert(0, 'platform'); sys.path.insert(0, '.');"
        "import platform; print(platform.python_version(), platform.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    version, path = out.split()
    assert version == ".".join(map(str, sys.version_info[:3]))
    assert not Path(path).is_relative_to(ROOT)
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_django_project_package_lives_inside_platform_folder() -> None:
    out = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "no issues" in out.stdout


def test_fixed_layout_exists() -> None:
    for name in [
        "manage.py", "pyproject.toml", "Makefile", "platform", "consensus", "flags",
        "discovery", "frontend", "tests", "deploy", "docs", ".ci/run", "README.md",
    ]:
        assert (ROOT / name).exists(), name
