"""Snapshot files: one checksummed file per Raft snapshot, written atomically.

File name: ``{term:016x}-{index:016x}.snap``. Content (integers little-endian)::

    header  magic "FLAGSNAP" | version:u32 = 1 | crc:u32 | body_length:u64
    body    index:u64 | term:u64 | voters:u32 | learners:u32
            | voter ids:u64 * voters | learner ids:u64 * learners | data

``crc`` is the CRC32C of the whole body (metadata and data). A file is written
as ``<name>.tmp``, fsynced, renamed into place and the directory fsynced, so
a visible snapshot file is always complete; a damaged one is detected by its
length or checksum.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct

from consensus.raft.types import ConfState, Snapshot, SnapshotMetadata
from consensus.storage.diskio import crc32c, fsync_dir, read_up_to, write_all

log = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"FLAGSNAP"
SNAPSHOT_VERSION = 1
SNAPSHOT_SUFFIX = ".snap"
_TEMP_SUFFIX = ".tmp"
_SNAPSHOT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_HEADER = struct.Struct("<8sIIQ")  # magic, version, crc32c(body), body length
_METADATA = struct.Struct("<QQII")  # index, term, voter count, learner count
_NODE_ID = struct.Struct("<Q")


class SnapshotCorruptError(Exception):
    """A snapshot file failed verification, or no snapshot file in a store is valid."""


def snapshot_name(term: int, index: int) -> str:
    """The file name of the snapshot at (``index``, ``term``)."""
    return f"{term:016x}-{index:016x}{SNAPSHOT_SUFFIX}"


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    """``(index, term)`` of a snapshot file name, or None if it is not one."""
    match = _SNAPSHOT_NAME.match(name)
    if match is None:
        return None
    return int(match.group(2), 16), int(match.group(1), 16)


def encode_snapshot_metadata(metadata: SnapshotMetadata) -> bytes:
    """The body's metadata part: position and membership."""
    voters = metadata.conf_state.voters
    learners = metadata.conf_state.learners
    return b"".join(
        (
            _METADATA.pack(metadata.index, metadata.term, len(voters), len(learners)),
            struct.pack(f"<{len(voters)}Q", *voters),
            struct.pack(f"<{len(learners)}Q", *learners),
        )
    )


class SnapshotStore:
    """A directory of snapshot files: atomic save, verified load with fallback, release."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Open (creating if needed) the store in ``directory``; unfinished temp files are removed."""
        self._dir = os.path.abspath(os.fspath(directory))
        if not os.path.isdir(self._dir):
            os.makedirs(self._dir, exist_ok=True)
            fsync_dir(os.path.dirname(self._dir))
        leftovers = [n for n in os.listdir(self._dir) if n.endswith(SNAPSHOT_SUFFIX + _TEMP_SUFFIX)]
        for name in leftovers:
            os.unlink(os.path.join(self._dir, name))
        if leftovers:
            fsync_dir(self._dir)

    @property
    def directory(self) -> str:
        return self._dir

    def path_of(self, index: int, term: int) -> str:
        return os.path.join(self._dir, snapshot_name(term, index))

    def list_snapshots(self) -> list[tuple[int, int]]:
        """``(index, term)`` of every snapshot file (valid or not), oldest first."""
        found = []
        for name in os.listdir(self._dir):
            parsed = parse_snapshot_name(name)
            if parsed is not None:
                found.append(parsed)
        found.sort()
        return found

    def save(self, snapshot: Snapshot) -> str:
        """Write ``snapshot`` durably and atomically; returns its path.

        Writing the same (index, term) again replaces the file atomically.
        """
        meta = snapshot.metadata
        if meta.index <= 0:
            raise ValueError("cannot save an empty snapshot (index 0)")
        head = encode_snapshot_metadata(meta)
        data = snapshot.data
        crc = crc32c(data, crc32c(head, 0))
        header = _HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc, len(head) + len(data))
        path = self.path_of(meta.index, meta.term)
        temp = path + _TEMP_SUFFIX
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            try:
                write_all(fd, header + head)
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        fsync_dir(self._dir)
        return path

    def load(self, index: int, term: int) -> Snapshot:
        """The snapshot at (``index``, ``term``), verified.

        Raises FileNotFoundError when there is no such file and
        SnapshotCorruptError when it fails verification.
        """
        return _read_snapshot(self.path_of(index, term), index, term)

    def load_latest(self) -> Snapshot | None:
        """The newest snapshot that verifies, or None when the store has no snapshot files.

        A newest file that fails verification is skipped with a warning and the
        previous one tried; SnapshotCorruptError when files exist but none is valid.
        """
        problems = []
        for index, term in reversed(self.list_snapshots()):
            path = self.path_of(index, term)
            try:
                return _read_snapshot(path, index, term)
            except (SnapshotCorruptError, OSError) as exc:
                log.warning("skipping snapshot %s, falling back to an older one: %s", path, exc)
                problems.append(str(exc))
        if problems:
            raise SnapshotCorruptError(
                f"no valid snapshot in {self._dir}: " + "; ".join(problems)
            )
        return None

    def release(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest snapshot files (``keep`` >= 1); return their paths."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        doomed = self.list_snapshots()[:-keep]
        return self._remove(doomed)

    def discard(self, index: int, term: int) -> list[str]:
        """Delete the snapshot file at (``index``, ``term``) if there is one (a superseded one)."""
        if (index, term) not in self.list_snapshots():
            return []
        return self._remove([(index, term)])

    def discard_newer(self, index: int) -> list[str]:
        """Delete snapshot files newer than ``index`` (orphans whose WAL marker was never written)."""
        return self._remove([(i, t) for i, t in self.list_snapshots() if i > index])

    def _remove(self, positions: list[tuple[int, int]]) -> list[str]:
        removed = []
        for index, term in positions:
            path = self.path_of(index, term)
            os.unlink(path)
            removed.append(path)
        if removed:
            fsync_dir(self._dir)
        return removed


def _read_snapshot(path: str, index: int, term: int) -> Snapshot:
    """Read and verify the snapshot file at ``path``, expected at (``index``, ``term``).

    The state (``data``) is read straight into its own bytes object: slicing it
    out of the whole file would copy hundreds of MB while holding the GIL,
    a stall for every other thread (the member's event loop included).
    """
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        head = read_up_to(f, _HEADER.size + _METADATA.size)
        if len(head) < _HEADER.size:
            raise SnapshotCorruptError(f"{path}: truncated header ({len(head)} bytes)")
        magic, version, crc, body_length = _HEADER.unpack_from(head, 0)
        if magic != SNAPSHOT_MAGIC:
            raise SnapshotCorruptError(f"{path}: not a snapshot file (magic {magic!r})")
        if version != SNAPSHOT_VERSION:
            raise SnapshotCorruptError(f"{path}: unsupported snapshot version {version}")
        if size != _HEADER.size + body_length:
            raise SnapshotCorruptError(
                f"{path}: {size} bytes, the header promises {_HEADER.size + body_length}"
            )
        fixed = memoryview(head)[_HEADER.size :]  # the fixed-size metadata (shorter if the body is)
        rest_length = body_length - len(fixed)
        ids_length = -1
        if len(fixed) == _METADATA.size:
            meta_index, meta_term, voter_count, learner_count = _METADATA.unpack_from(fixed, 0)
            ids_length = (voter_count + learner_count) * _NODE_ID.size
        if 0 <= ids_length <= rest_length:
            ids = read_up_to(f, ids_length)
            data = read_up_to(f, rest_length - ids_length)
        else:  # damaged counts: still checksum the body, so the error says what happened
            ids, data = b"", read_up_to(f, rest_length)
    actual = crc32c(data, crc32c(ids, crc32c(fixed, 0)))
    if actual != crc:
        raise SnapshotCorruptError(
            f"{path}: checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        )
    if not 0 <= ids_length <= rest_length:
        raise SnapshotCorruptError(f"{path}: malformed metadata (membership does not fit the body)")
    voters = list(struct.unpack_from(f"<{voter_count}Q", ids, 0))
    learners = list(struct.unpack_from(f"<{learner_count}Q", ids, voter_count * _NODE_ID.size))
    if (meta_index, meta_term) != (index, term):
        raise SnapshotCorruptError(
            f"{path}: holds index {meta_index} term {meta_term}, its name index {index} term {term}"
        )
    return Snapshot(
        data=data,
        metadata=SnapshotMetadata(
            index=meta_index, term=meta_term, conf_state=ConfState(voters, learners)
        ),
    )

