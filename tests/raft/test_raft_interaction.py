"""The data-driven interaction scripts under ``testdata/``, one test per file."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.raft.testing.datadriven import run_file
from consensus.raft.testing.interaction import InteractionEnv

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_interaction(path: Path, rewrite: bool) -> None:
    run_file(path, InteractionEnv().handle, rewrite=rewrite)


def test_scripts_exist() -> None:
    assert len(SCRIPTS) >= 10
