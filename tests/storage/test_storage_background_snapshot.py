"""Background snapshots: a forked child writes the state as of the fork; the log adopts the file."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from consensus.raft.types import ConfState, Entry, HardState, SnapshotOutOfDateError
from consensus.storage.background_snapshot import SnapshotWriteError
from consensus.storage.durable import DurableLog


def open_log(path: Path, **options: int) -> DurableLog:
    return DurableLog.open(path, b"m", segment_bytes=2048, preallocate=False, **options)


def fill(log: DurableLog, last: int) -> None:
    for first in range(1, last + 1, 10):
        batch = [Entry(1, i, data=f"e{i}".encode()) for i in range(first, min(first + 9, last) + 1)]
        log.persist(HardState(1, 1, batch[-1].index), batch, None, must_sync=True)


def test_child_writes_the_state_as_it_was_at_the_fork(tmp_path: Path) -> None:
    """Mutations made by the member after the fork never leak into the snapshot."""
    log = open_log(tmp_path, catch_up_entries=5)
    fill(log, 100)
    state = {"applied": 100, "keys": {f"k{i}": i for i in range(1000)}}

    async def scenario() -> bytes:
        job = log.start_background_snapshot(100, ConfState([1, 2, 3]), lambda: json.dumps(state).encode())
        state["applied"] = 101  # the member goes on applying while the child encodes
        state["keys"] = {}
        snapshot = await job.result()
        assert await log.adopt_snapshot(snapshot)
        return snapshot.data

    data = asyncio.run(scenario())
    assert json.loads(data) == {"applied": 100, "keys": {f"k{i}": i for i in range(1000)}}
    snap = log.storage.snapshot()
    assert (snap.metadata.index, snap.metadata.term, snap.data) == (100, 1, data)
    assert snap.metadata.conf_state == ConfState([1, 2, 3])
    assert log.storage.first_index() == 96  # compacted behind it, keeping 5 catch-up entries
    log.close()

    again = open_log(tmp_path)  # the WAL marker names the adopted file
    assert again.storage.snapshot().data == data
    assert again.storage.snapshot().metadata.index == 100
    again.close()


def test_a_snapshot_superseded_meanwhile_is_dropped_with_its_file(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    fill(log, 50)

    async def scenario() -> bool:
        job = log.start_background_snapshot(30, ConfState([1]), lambda: b"old")
        log.create_snapshot(40, ConfState([1]), b"newer, taken in-line")  # say, a forced one
        snapshot = await job.result()
        return await log.adopt_snapshot(snapshot)

    assert asyncio.run(scenario()) is False
    assert log.snapshots.list_snapshots() == [(40, 1)]
    assert log.storage.snapshot().data == b"newer, taken in-line"
    log.close()


def test_a_failing_child_is_reported_and_leaves_no_snapshot(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = open_log(tmp_path)
    fill(log, 20)

    def broken() -> bytes:
        raise OSError(28, "No space left on device")

    async def scenario() -> None:
        await log.start_background_snapshot(20, ConfState([1]), broken).result()

    with pytest.raises(SnapshotWriteError, match="snapshot at 20 exited with status 1"):
        asyncio.run(scenario())
    assert "No space left on device" in capfd.readouterr().err
    assert log.snapshots.list_snapshots() == []
    assert log.storage.snapshot().metadata.index == 0
    assert not [n for n in os.listdir(log.snapshots.directory) if n.endswith(".tmp")]
    log.close()


def test_cancel_kills_the_child(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    fill(log, 20)

    def slow() -> bytes:
        time.sleep(30)
        return b"never"

    async def scenario() -> None:
        job = log.start_background_snapshot(20, ConfState([1]), slow)
        job.cancel()
        await job.result()

    with pytest.raises(SnapshotWriteError, match="killed by signal 9"):
        asyncio.run(scenario())
    assert log.snapshots.list_snapshots() == []
    log.close()


def test_a_snapshot_not_newer_than_the_current_one_is_refused_before_forking(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    fill(log, 20)
    log.create_snapshot(15, ConfState([1]), b"s")

    with pytest.raises(SnapshotOutOfDateError):
        log.start_background_snapshot(15, ConfState([1]), lambda: b"x")
    log.close()
