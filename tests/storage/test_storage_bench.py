"""The WAL benchmark runs and reports its numbers (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consensus.storage.bench import main, wal_append_benchmark


def test_benchmark_reports_both_modes(tmp_path: Path) -> None:
    result = wal_append_benchmark(str(tmp_path), 0.05, entry_size=64, batch=2, writers=4)
    for mode in ("fsync_every_append", "group_commit"):
        numbers = result[mode]
        assert numbers["appends"] > 0
        assert numbers["entries_per_s"] == pytest.approx(2 * numbers["appends_per_s"], rel=0.01)
        assert numbers["fsyncs_per_s"] > 0
    assert result["group_commit"]["writers"] == 4
    assert list(tmp_path.iterdir()) == []  # the WALs are cleaned up


def test_cli_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path), "--seconds", "0.02", "--writers", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["batch"] == 1 and printed["entry_size"] == 256
