"""Durable storage for the Raft core: the write-ahead log, snapshot files, and their glue.

* :mod:`consensus.storage.wal` — segmented WAL of CRC32C-framed records.
* :mod:`consensus.storage.group_commit` — one fsync thread shared by asyncio writers.
* :mod:`consensus.storage.snapshot_store` — atomic, checksummed snapshot files.
* :mod:`consensus.storage.durable` — :class:`DurableLog`, a WAL and snapshots behind a MemoryStorage.

The on-disk format and the recovery rules are described in ``docs/storage.md``.
"""

from consensus.storage.durable import DurableLog, DurableLogError
from consensus.storage.group_commit import GroupCommitter
from consensus.storage.snapshot_store import SnapshotCorruptError, SnapshotStore
from consensus.storage.wal import WAL, RecoveredLog, TornTail, WALCorruptError, WALError

__all__ = [
    "WAL",
    "DurableLog",
    "DurableLogError",
    "GroupCommitter",
    "RecoveredLog",
    "SnapshotCorruptError",
    "SnapshotStore",
    "TornTail",
    "WALCorruptError",
    "WALError",
]
