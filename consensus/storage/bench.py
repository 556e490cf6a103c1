"""WAL append benchmark: fsync on every append versus group commit.

Run ``python -m consensus.storage.bench --dir DIR --seconds 5`` for a JSON
report. Numbers depend entirely on the disk under ``DIR`` (a tmpfs makes
fsync free); benchmarks are never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from consensus.raft.types import Entry, HardState
from consensus.storage.group_commit import GroupCommitter
from consensus.storage.wal import DEFAULT_SEGMENT_BYTES, WAL


def _percentile_ms(samples: list[float], fraction: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 3)


def _rates(appends: int, entries: int, fsyncs: int, elapsed: float, entry_size: int) -> dict[str, Any]:
    return {
        "appends": appends,
        "appends_per_s": round(appends / elapsed, 1),
        "entries_per_s": round(entries / elapsed, 1),
        "fsyncs_per_s": round(fsyncs / elapsed, 1),
        "appends_per_fsync": round(appends / fsyncs, 2) if fsyncs else None,
        "mib_per_s": round(entries * entry_size / elapsed / (1 << 20), 2),
    }


def _fsync_every_append(
    directory: str, seconds: float, entry_size: int, batch: int, segment_bytes: int, preallocate: bool
) -> dict[str, Any]:
    wal = WAL.create(directory, b"bench", segment_bytes=segment_bytes, preallocate=preallocate)
    payload = os.urandom(entry_size)
    index = 0
    appends = 0
    latencies: list[float] = []
    fsyncs_before = wal.fsync_count
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        entries = [Entry(term=1, index=index + i + 1, data=payload) for i in range(batch)]
        index += batch
        wal.save(HardState(term=1, vote=1, commit=index), entries)
        wal.sync()
        appends += 1
        after = time.perf_counter()
        latencies.append(after - now)
        now = after
    elapsed = now - start
    fsyncs = wal.fsync_count - fsyncs_before
    wal.close()
    result = _rates(appends, index, fsyncs, elapsed, entry_size)
    result["p50_ms"] = _percentile_ms(latencies, 0.5)
    result["p99_ms"] = _percentile_ms(latencies, 0.99)
    return result


async def _group_commit(
    directory: str,
    seconds: float,
    entry_size: int,
    batch: int,
    writers: int,
    segment_bytes: int,
    preallocate: bool,
) -> dict[str, Any]:
    wal = WAL.create(directory, b"bench", segment_bytes=segment_bytes, preallocate=preallocate)
    committer = GroupCommitter(wal)
    payload = os.urandom(entry_size)
    next_index = 1
    appends = 0
    latencies: list[float] = []
    fsyncs_before = wal.fsync_count
    start = time.perf_counter()
    deadline = start + seconds

    async def writer() -> None:
        nonlocal next_index, appends
        while (began := time.perf_counter()) < deadline:
            # Index allocation and the append happen before commit() first suspends,
            # so concurrent writers append consecutive batches.
            entries = [Entry(term=1, index=next_index + i, data=payload) for i in range(batch)]
            next_index += batch
            await committer.commit(None, entries)
            appends += 1
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - start
    fsyncs = wal.fsync_count - fsyncs_before
    committer.close()
    wal.close()
    result = _rates(appends, next_index - 1, fsyncs, elapsed, entry_size)
    result["writers"] = writers
    result["p50_ms"] = _percentile_ms(latencies, 0.5)
    result["p99_ms"] = _percentile_ms(latencies, 0.99)
    result["mean_ms"] = round(statistics.fmean(latencies) * 1000, 3) if latencies else 0.0
    return result


def wal_append_benchmark(
    dir: str,
    seconds: float,
    entry_size: int = 256,
    batch: int = 1,
    *,
    writers: int = 8,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    preallocate: bool = True,
) -> dict[str, Any]:
    """Measure WAL appends/s and fsyncs/s for ``seconds`` per mode, in fresh WALs under ``dir``.

    Modes: ``fsync_every_append`` (one writer: save a batch of ``batch``
    entries of ``entry_size`` bytes plus a hard state, then sync) and
    ``group_commit`` (``writers`` asyncio writers each awaiting
    ``GroupCommitter.commit`` of a batch). The WALs are deleted afterwards.
    """
    os.makedirs(dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="wal-bench-", dir=dir)
    try:
        single = _fsync_every_append(
            os.path.join(work, "fsync-every-append"), seconds, entry_size, batch, segment_bytes, preallocate
        )
        grouped = asyncio.run(
            _group_commit(
                os.path.join(work, "group-commit"),
                seconds,
                entry_size,
                batch,
                writers,
                segment_bytes,
                preallocate,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "entry_size": entry_size,
        "batch": batch,
        "seconds_per_mode": seconds,
        "preallocate": preallocate,
        "segment_bytes": segment_bytes,
        "fsync_every_append": single,
        "group_commit": grouped,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consensus.storage.bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--dir", default=".", help="directory on the disk to measure (default: .)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each mode")
    parser.add_argument("--entry-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1, help="entries per append")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers for group commit")
    parser.add_argument("--no-preallocate", action="store_true")
    args = parser.parse_args(argv)
    result = wal_append_benchmark(
        args.dir,
        args.seconds,
        args.entry_size,
        args.batch,
        writers=args.writers,
        preallocate=not args.no_preallocate,
    )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
