"""Group commit: concurrent asyncio writers, one fsync thread, every commit durable and in order."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from consensus.raft.types import Entry, HardState
from consensus.storage.group_commit import GroupCommitter
from consensus.storage.wal import WAL, WALError


async def test_concurrent_writers_are_durable_in_append_order(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=4096)
    committer = GroupCommitter(wal)
    next_index = 1
    acknowledged: list[int] = []

    async def writer(name: int) -> None:
        nonlocal next_index
        for _ in range(40):
            index = next_index
            next_index += 1
            seq = await committer.commit(
                HardState(1, 1, index - 1), [Entry(1, index, data=f"w{name}-{index}".encode())]
            )
            # Acknowledged means durable: the sync counter already covers it.
            assert seq <= wal.durable_seq
            acknowledged.append(index)

    await asyncio.gather(*(writer(n) for n in range(16)))
    committer.close()
    assert sorted(acknowledged) == list(range(1, 641))
    # Many writers shared each fsync (segment rolls fsync too, and count).
    assert committer.rounds < 640
    assert wal.fsync_count < 640
    wal.close()

    wal, recovered = WAL.open(tmp_path, segment_bytes=4096)
    wal.close()
    assert [e.index for e in recovered.entries] == list(range(1, 641))
    assert recovered.hard_state == HardState(1, 1, 639)


async def test_appends_during_an_fsync_share_the_next_one(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m")
    committer = GroupCommitter(wal)
    await committer.commit(None, [Entry(1, 1)])
    fsyncs = wal.fsync_count
    # Hold the WAL's sync lock: the thread's next sync stalls as if its fsync were slow,
    # while ten more writers append and wait.
    wal._sync_lock.acquire()
    try:
        tasks = [asyncio.ensure_future(committer.commit(None, [Entry(1, i)])) for i in range(2, 12)]
        for _ in range(3):
            await asyncio.sleep(0)
    finally:
        wal._sync_lock.release()
    assert await asyncio.gather(*tasks) == list(range(2, 12))
    assert wal.fsync_count == fsyncs + 1  # one fsync covered all ten
    committer.close()
    wal.close()


async def test_mixed_with_synchronous_callers_and_threads(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m")
    committer = GroupCommitter(wal)
    lock = threading.Lock()
    index = 0

    def next_batch() -> list[Entry]:
        nonlocal index
        index += 1
        return [Entry(1, index)]

    def thread_writer() -> None:
        for _ in range(50):
            with lock:
                wal.save(None, next_batch())
            wal.sync()

    thread = threading.Thread(target=thread_writer)
    thread.start()
    for _ in range(50):
        with lock:
            seq = wal.save(None, next_batch())
        await committer.wait_durable(seq)
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    committer.close()
    wal.close()
    wal, recovered = WAL.open(tmp_path)
    wal.close()
    assert [e.index for e in recovered.entries] == list(range(1, 101))


async def test_a_failed_sync_fails_the_waiters(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m")
    committer = GroupCommitter(wal)
    await committer.commit(None, [Entry(1, 1)])
    real_fd = wal._fd
    wal._fd = 987654  # a descriptor that is not open: the next flush fails with EBADF
    with pytest.raises(WALError, match="sync failed"):
        await committer.commit(None, [Entry(1, 2)])
    with pytest.raises(WALError):
        await committer.commit(None, [Entry(1, 3)])
    committer.close()
    wal._fd = real_fd
    wal.close()


async def test_close_resolves_pending_waiters(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m")
    committer = GroupCommitter(wal)
    pending = asyncio.ensure_future(committer.commit(None, [Entry(1, 1)]))
    await asyncio.sleep(0)
    await asyncio.get_running_loop().run_in_executor(None, committer.close)
    assert await pending == 1
    with pytest.raises(WALError, match="closed"):
        await committer.commit(None, [Entry(1, 2)])
    wal.close()
