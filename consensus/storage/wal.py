"""The write-ahead log: a directory of segment files holding CRC32C-framed records.

The WAL is how a member makes its Raft state durable: every batch of log
entries, every hard state (term, vote, commit) and a marker for every snapshot
is appended here before the member acts on it. On start-up :meth:`WAL.open`
replays the records into a :class:`RecoveredLog`.

On-disk format (all integers little-endian; see ``docs/storage.md``):

* Segment files are named ``{seq:016x}-{first_index:016x}.wal``: ``seq`` counts
  segments from 1 without gaps, ``first_index`` is the log index expected
  next when the segment was started. A new segment is created as ``*.tmp``,
  filled with its header group, fsynced, renamed into place and the directory
  fsynced, so a visible segment always has a complete header group.
* A record is ``length:u32 | crc:u32 | type:u8 | payload[length]`` where ``crc``
  is the CRC32C of the type byte and the payload.
* Every segment starts with a header group of four records: SEGMENT (magic,
  seq, first index), METADATA (the bytes given at create time), HARD_STATE and
  SNAPSHOT (the latest snapshot marker). A segment can therefore be read
  without its predecessors, which is what lets :meth:`WAL.release_to` delete
  old segments.
* ENTRIES records carry a batch of consecutive entries:
  ``first_index:u64 | count:u32`` then per entry ``term:u64 | type:u8 |
  length:u32 | data``.

Recovery rules (:meth:`WAL.open`):

* a damaged record at the end of the last segment with nothing valid after it
  (a torn write: partial record, CRC mismatch, or zero/garbage tail) is cut
  off, and the file is repaired so that later appends follow the valid prefix;
* a damaged record followed by a valid record, damage anywhere in a segment
  that is not the last, or damage inside any segment's header group (it was
  fsynced before the segment became visible) raises :class:`WALCorruptError`
  naming the file and byte offset: entries are never dropped silently.

Thread safety: all methods may be called from several threads; appends are
serialised by an internal lock, and :meth:`WAL.sync` only holds that lock to
hand buffered bytes to the kernel, not during the fsync itself, so appends
continue while a sync runs (see :mod:`consensus.storage.group_commit`).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import mmap
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consensus.raft.types import Entry, EntryType, HardState
from consensus.storage.diskio import (
    crc32c,
    fsync_dir,
    is_zero_from,
    mapped_file,
    pwrite_all,
    sync_data,
)

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
"""A segment is closed and a new one started once it reaches this size."""

MAX_RECORD_BYTES = 1 << 30
"""No record payload is larger; a bigger length field is damage."""

FLUSH_BYTES = 1 << 20
"""Buffered bytes that are handed to the kernel even without a sync."""

SEGMENT_MAGIC = b"FLAGWAL1"

SEGMENT_SUFFIX = ".wal"
_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_TEMP_SUFFIX = ".tmp"


class RecordType(enum.IntEnum):
    """What a WAL record holds. 0 is never valid, so zero-filled space never parses."""

    SEGMENT = 1
    """Segment header: magic, seq, first index. Always the first record of a segment."""
    METADATA = 2
    """The opaque metadata given to :meth:`WAL.create` (node id, cluster id...)."""
    HARD_STATE = 3
    """term, vote, commit."""
    ENTRIES = 4
    """A batch of consecutive log entries."""
    SNAPSHOT = 5
    """A snapshot marker (index, term): the log before it lives in a snapshot file."""


HEADER_GROUP = (RecordType.SEGMENT, RecordType.METADATA, RecordType.HARD_STATE, RecordType.SNAPSHOT)
"""The records every segment starts with, in this order."""

_FRAME = struct.Struct("<IIB")  # payload length, crc32c(type byte + payload), type
FRAME_BYTES = _FRAME.size
_SEGMENT_HEADER = struct.Struct("<8sQQ")  # magic, seq, first index
_HARD_STATE = struct.Struct("<QQQ")  # term, vote, commit
_SNAPSHOT_MARKER = struct.Struct("<QQ")  # index, term
_ENTRIES_HEAD = struct.Struct("<QI")  # first index, count
_ENTRY_HEAD = struct.Struct("<QBI")  # term, entry type, data length

_RECORD_TYPES = frozenset(int(t) for t in RecordType)
_TYPE_CRC = {int(t): crc32c(bytes([t]), 0) for t in RecordType}
_ENTRY_TYPES = {int(t): t for t in EntryType}
_ENTRIES = int(RecordType.ENTRIES)
_HARD_STATE_TYPE = int(RecordType.HARD_STATE)
_BODY_TYPES = (RecordType.HARD_STATE, RecordType.ENTRIES, RecordType.SNAPSHOT)
"""Record types that may follow a header group: the only ones a resync scan looks for."""
_BODY_TYPE_SET = frozenset(int(t) for t in _BODY_TYPES)
_BODY_TYPE_BYTE = re.compile(b"[" + re.escape(bytes(sorted(_BODY_TYPES))) + b"]")


class WALError(Exception):
    """Base class of the WAL's errors (closed, failed after an I/O error, misuse of files)."""


class WALCorruptError(WALError):
    """The WAL holds damage that is not a torn tail; recovery refuses to guess.

    ``path`` and ``offset`` locate the first damaged record.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"WAL corrupt: {path} at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TornTail:
    """Where recovery cut a damaged tail off the last segment, and why."""

    path: str
    offset: int
    reason: str


@dataclass(slots=True)
class RecoveredLog:
    """What :meth:`WAL.open` read back: the state to rebuild the Raft log from.

    ``entries`` are the entries after the snapshot marker, consecutive from
    ``snapshot_index + 1`` (a later append at an index replaced the suffix it
    conflicted with). ``torn_tail`` says whether a damaged tail was cut off.
    """

    metadata: bytes
    hard_state: HardState
    snapshot_index: int
    snapshot_term: int
    entries: list[Entry]
    torn_tail: TornTail | None = None


def segment_name(seq: int, first_index: int) -> str:
    """The file name of segment ``seq`` whose first entry is expected at ``first_index``."""
    return f"{seq:016x}-{first_index:016x}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """``(seq, first_index)`` of a segment file name, or None if it is not one."""
    match = _SEGMENT_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1), 16), int(match.group(2), 16)


def _list_segments(directory: str) -> list[tuple[int, int, str]]:
    """``(seq, first_index, path)`` of every segment in ``directory``, by seq."""
    found = []
    for name in os.listdir(directory):
        parsed = parse_segment_name(name)
        if parsed is not None:
            found.append((parsed[0], parsed[1], os.path.join(directory, name)))
    found.sort()
    return found


# -- record encoding ----------------------------------------------------------


def _frame(record_type: RecordType, payload: bytes) -> bytes:
    crc = crc32c(payload, _TYPE_CRC[record_type])
    return _FRAME.pack(len(payload), crc, record_type) + payload


def _encode_entries(entries: Sequence[Entry]) -> bytes:
    first = entries[0].index
    parts = [_ENTRIES_HEAD.pack(first, len(entries))]
    pack = _ENTRY_HEAD.pack
    expected = first
    for entry in entries:
        if entry.index != expected:
            raise ValueError(
                f"entries in one save must be consecutive: {expected} expected, got {entry.index}"
            )
        expected += 1
        parts.append(pack(entry.term, entry.type, len(entry.data)))
        parts.append(entry.data)
    return b"".join(parts)


def _decode_entries(data: bytes | mmap.mmap, start: int, end: int) -> list[Entry]:
    """The entries of the ENTRIES payload ``data[start:end]``; ValueError/KeyError if malformed."""
    first, count = _ENTRIES_HEAD.unpack_from(data, start)
    pos = start + _ENTRIES_HEAD.size
    if count * _ENTRY_HEAD.size > end - pos:
        raise ValueError(f"{count} entries cannot fit in {end - start} bytes")
    unpack = _ENTRY_HEAD.unpack_from
    head_size = _ENTRY_HEAD.size
    entry_types = _ENTRY_TYPES
    entries = []
    for index in range(first, first + count):
        term, entry_type, length = unpack(data, pos)
        pos += head_size
        data_end = pos + length
        if data_end > end:
            raise ValueError(f"entry {index} runs past the end of the record")
        entries.append(Entry(term, index, entry_types[entry_type], data[pos:data_end]))
        pos = data_end
    if pos != end:
        raise ValueError(f"{end - pos} trailing bytes after {count} entries")
    return entries


def _find_valid_record(data: bytes | mmap.mmap, start: int) -> int | None:
    """The offset of the first intact body record starting at or after ``start``, if any.

    Used after a damaged record to decide between a torn tail (nothing valid
    follows) and corruption in the middle (something does). Candidates are the
    positions whose type byte is a body record type; each must have a
    plausible shape (so garbage costs no long CRC runs) and a matching CRC.
    """
    size = len(data)
    view = memoryview(data)
    for match in _BODY_TYPE_BYTE.finditer(data, start + FRAME_BYTES - 1):
        offset = match.start() - (FRAME_BYTES - 1)
        length, crc, record_type = _FRAME.unpack_from(data, offset)
        end = offset + FRAME_BYTES + length
        if end > size or not _plausible_body(record_type, view[offset + FRAME_BYTES : end]):
            continue
        if crc32c(view[offset + FRAME_BYTES - 1 : end], 0) == crc:
            return offset
    return None


def _plausible_body(record_type: int, payload: memoryview) -> bool:
    """Whether ``payload`` has the exact shape of a ``record_type`` record (CRC not checked)."""
    if record_type == RecordType.HARD_STATE:
        return len(payload) == _HARD_STATE.size
    if record_type == RecordType.SNAPSHOT:
        return len(payload) == _SNAPSHOT_MARKER.size
    if len(payload) < _ENTRIES_HEAD.size:
        return False
    _, count = _ENTRIES_HEAD.unpack_from(payload, 0)
    position = _ENTRIES_HEAD.size
    if count < 1 or count * _ENTRY_HEAD.size > len(payload) - position:
        return False
    for _ in range(count):
        if position + _ENTRY_HEAD.size > len(payload):
            return False
        _, entry_type, length = _ENTRY_HEAD.unpack_from(payload, position)
        if entry_type not in _ENTRY_TYPES:
            return False
        position += _ENTRY_HEAD.size + length
    return position == len(payload)


# -- replay ---------------------------------------------------------------------


class _Replay:
    """The recovery state machine: applies records in order, as the log would have evolved.

    Invariant: ``entries`` are consecutive. The log is *anchored* when it is
    empty or starts at ``snapshot_index + 1``; it may be unanchored in the
    middle of a replay that starts at a segment whose predecessors were
    released (the marker that makes them unnecessary comes later), never at
    the end.
    """

    def __init__(self) -> None:
        self.metadata: bytes | None = None
        self.hard_state = HardState()
        self.snapshot_index = 0
        self.snapshot_term = 0
        self.entries: list[Entry] = []
        self.entries_start: tuple[str, int] = ("", 0)
        """Where the record holding ``entries[0]`` is (for the error message of a gap)."""

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    def append(self, batch: list[Entry], path: str, offset: int) -> None:
        if batch[0].index <= self.snapshot_index:  # already covered by the snapshot
            batch = batch[self.snapshot_index + 1 - batch[0].index :]
            if not batch:
                return
        first = batch[0].index
        entries = self.entries
        if entries and entries[0].index <= first <= entries[-1].index + 1:
            del entries[first - entries[0].index :]  # raft truncation of a conflicting suffix
            entries.extend(batch)
        elif not entries and first == self.snapshot_index + 1:
            entries.extend(batch)
            self.entries_start = (path, offset)
        else:
            # A gap: only legitimate at the start of a released WAL; checked in finish().
            self.entries = batch
            self.entries_start = (path, offset)

    def marker(self, index: int, term: int, path: str, offset: int) -> None:
        if index < self.snapshot_index or (
            index == self.snapshot_index and term != self.snapshot_term
        ):
            raise WALCorruptError(
                path,
                offset,
                f"snapshot marker ({index}, term {term}) goes back from "
                f"({self.snapshot_index}, term {self.snapshot_term})",
            )
        entries = self.entries
        if entries and entries[0].index <= index <= entries[-1].index:
            if entries[index - entries[0].index].term == term:
                self.entries = entries[index - entries[0].index + 1 :]  # compaction
            else:
                self.entries = []  # the log was replaced by a snapshot from the leader
        elif entries and entries[0].index > index:
            pass  # entries start after the marker: kept (anchored iff they start at index + 1)
        else:
            self.entries = []  # everything known is older than the snapshot
        self.snapshot_index = index
        self.snapshot_term = term

    def finish(self) -> None:
        if self.entries and self.entries[0].index != self.snapshot_index + 1:
            path, offset = self.entries_start
            raise WALCorruptError(
                path,
                offset,
                f"the log resumes at index {self.entries[0].index} but the latest snapshot "
                f"marker is at {self.snapshot_index}: entries "
                f"{self.snapshot_index + 1}..{self.entries[0].index - 1} are missing",
            )


@dataclass(slots=True)
class _Segment:
    """What the WAL remembers about one of its segment files."""

    seq: int
    first_index: int
    path: str
    max_entry_index: int = 0
    """The highest entry index any ENTRIES record in this segment holds (0: none)."""
    marker_indexes: list[int] = field(default_factory=list)
    """Indexes of the snapshot markers in this segment, header copy included, in order."""


@dataclass(slots=True)
class _ScanResult:
    segment: _Segment
    valid_end: int
    """Offset just after the last intact record."""
    damage: str | None
    """Why the bytes from ``valid_end`` on do not parse, or None if the file ends there."""
    tail_is_zero: bool


def _scan_segment(
    seq: int,
    first_index: int,
    path: str,
    data: bytes | mmap.mmap,
    is_last: bool,
    replay: _Replay,
) -> _ScanResult:
    """Parse and replay one segment file, raising WALCorruptError for damage that is not a torn tail."""
    segment = _Segment(seq, first_index, path)
    view = memoryview(data)
    size = len(data)
    offset = 0
    count = 0
    damage: str | None = None
    unpack_frame = _FRAME.unpack_from
    header_records = len(HEADER_GROUP)
    while offset < size:
        if size - offset < FRAME_BYTES:
            damage = f"partial record header ({size - offset} bytes)"
            break
        length, crc, record_type = unpack_frame(data, offset)
        start = offset + FRAME_BYTES
        end = start + length
        if record_type not in _RECORD_TYPES:
            damage = f"invalid record type {record_type}"
            break
        if length > MAX_RECORD_BYTES or end > size:
            damage = f"record length {length} runs past the end of the file ({size} bytes)"
            break
        if crc32c(view[start - 1 : end], 0) != crc:
            damage = f"CRC mismatch in a {RecordType(record_type).name} record of {length} bytes"
            break
        if count < header_records:
            if record_type != HEADER_GROUP[count]:
                raise WALCorruptError(
                    path,
                    offset,
                    f"segment header group: expected a {HEADER_GROUP[count].name} record, "
                    f"found {RecordType(record_type).name}",
                )
        elif record_type not in _BODY_TYPE_SET:
            raise WALCorruptError(
                path, offset, f"a {RecordType(record_type).name} record after the header group"
            )
        try:
            if record_type == _ENTRIES:  # the hot path
                batch = _decode_entries(data, start, end)
                if batch:
                    known = replay.entries
                    if known and batch[0].index == known[-1].index + 1:
                        known.extend(batch)  # plain append: no truncation, no gap
                    else:
                        replay.append(batch, path, offset)
                    if batch[-1].index > segment.max_entry_index:
                        segment.max_entry_index = batch[-1].index
            elif record_type == _HARD_STATE_TYPE and length == _HARD_STATE.size:
                replay.hard_state = HardState(*_HARD_STATE.unpack_from(data, start))
            else:
                _apply_record(record_type, view[start:end], segment, replay, offset)
        except (ValueError, KeyError, struct.error) as exc:
            raise WALCorruptError(
                path,
                offset,
                f"malformed {RecordType(record_type).name} record (intact CRC): {exc}",
            ) from exc
        count += 1
        offset = end

    if damage is None:
        if count < len(HEADER_GROUP):
            raise WALCorruptError(path, offset, "segment ends inside its header group")
        return _ScanResult(segment, offset, None, True)

    tail_is_zero = is_zero_from(data, offset)
    if count < len(HEADER_GROUP):
        # The header group was fsynced before the segment was renamed into place.
        raise WALCorruptError(path, offset, f"{damage} inside the segment header group")
    if not is_last:
        raise WALCorruptError(path, offset, f"{damage} in a segment that is not the last")
    following = None if tail_is_zero else _find_valid_record(data, offset + 1)
    if following is not None:
        raise WALCorruptError(
            path, offset, f"{damage}, followed by an intact record at byte offset {following}"
        )
    return _ScanResult(segment, offset, damage, tail_is_zero)


def _apply_record(
    record_type: int, payload: memoryview, segment: _Segment, replay: _Replay, offset: int
) -> None:
    """Replay a record other than ENTRIES; ValueError/struct.error if malformed."""
    if record_type == RecordType.HARD_STATE:
        term, vote, commit = _HARD_STATE.unpack(payload)
        replay.hard_state = HardState(term, vote, commit)
    elif record_type == RecordType.SNAPSHOT:
        index, term = _SNAPSHOT_MARKER.unpack(payload)
        replay.marker(index, term, segment.path, offset)
        segment.marker_indexes.append(index)
    elif record_type == RecordType.METADATA:
        replay.metadata = payload.tobytes()
    else:  # SEGMENT
        magic, seq, first_index = _SEGMENT_HEADER.unpack(payload)
        if magic != SEGMENT_MAGIC:
            raise ValueError(f"bad magic {magic!r}")
        if (seq, first_index) != (segment.seq, segment.first_index):
            raise ValueError(
                f"header says seq {seq} first index {first_index}, the file name "
                f"seq {segment.seq} first index {segment.first_index}"
            )


# -- the WAL --------------------------------------------------------------------


class WAL:
    """A write-ahead log open for appending (see the module docstring for format and rules).

    Create one with :meth:`create` or :meth:`open`. :meth:`save` and
    :meth:`save_snapshot_marker` append to an in-process buffer and return the
    record's *append sequence number*; :meth:`sync` makes everything appended
    so far durable and returns the highest durable sequence number. After an
    I/O error the WAL refuses further work (the state of unsynced data is
    unknown after a failed fsync).
    """

    def __init__(
        self,
        directory: str,
        metadata: bytes,
        *,
        segment_bytes: int,
        preallocate: bool,
        hard_state: HardState,
        snapshot_index: int,
        snapshot_term: int,
        last_index: int,
    ) -> None:
        """Internal: use :meth:`create` or :meth:`open`."""
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        self._dir = directory
        self._metadata = metadata
        self._segment_bytes = segment_bytes
        self._preallocate = preallocate
        self._lock = threading.Lock()
        """Guards everything below except the fsync itself."""
        self._sync_lock = threading.Lock()
        """Serialises sync() calls, so retired descriptors are closed by nobody still syncing them."""
        self._segments: list[_Segment] = []
        self._fd = -1
        self._file_offset = 0
        """Bytes of the current segment already handed to the kernel."""
        self._buffer = bytearray()
        """Appended bytes not yet handed to the kernel; they follow ``_file_offset``."""
        self._retired_fds: list[int] = []
        """Descriptors of finished segments (already fsynced), closed by the next sync."""
        self._appended_seq = 0
        self._durable_seq = 0
        self._fsyncs = 0
        self.fsync_observer: Callable[[float], None] | None = None
        """Called with the seconds each fsync of the log took (on the syncing thread); metrics."""
        self._hard_state = HardState(hard_state.term, hard_state.vote, hard_state.commit)
        self._snapshot_index = snapshot_index
        self._snapshot_term = snapshot_term
        self._last_index = last_index
        """Last log index as recovery would see it; appends may not leave a gap after it."""
        self._failure: BaseException | None = None
        self._closed = False

    # -- construction -------------------------------------------------------

    @staticmethod
    def exists(directory: str | os.PathLike[str]) -> bool:
        """Whether ``directory`` holds at least one WAL segment."""
        directory = os.fspath(directory)
        return os.path.isdir(directory) and bool(_list_segments(directory))

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        metadata: bytes,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        preallocate: bool = True,
    ) -> WAL:
        """A new, empty WAL in ``directory`` (created if missing) holding ``metadata``.

        ``preallocate`` reserves each segment's full size up front
        (``posix_fallocate``), which makes fdatasync cheaper (no size change to
        journal) at the cost of disk space.
        """
        directory = os.path.abspath(os.fspath(directory))
        if cls.exists(directory):
            raise FileExistsError(f"a WAL already exists in {directory}")
        created = not os.path.isdir(directory)
        os.makedirs(directory, exist_ok=True)
        if created:
            fsync_dir(os.path.dirname(directory))
        _remove_temp_files(directory)
        wal = cls(
            directory,
            bytes(metadata),
            segment_bytes=segment_bytes,
            preallocate=preallocate,
            hard_state=HardState(),
            snapshot_index=0,
            snapshot_term=0,
            last_index=0,
        )
        with wal._lock:
            wal._start_segment_locked(1, 1)
        return wal

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        preallocate: bool = True,
    ) -> tuple[WAL, RecoveredLog]:
        """Recover the WAL in ``directory`` and open it for appending after its valid records.

        Raises FileNotFoundError if there is no WAL and WALCorruptError for
        damage other than a torn tail of the last segment (which is cut off).
        """
        directory = os.path.abspath(os.fspath(directory))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"no WAL directory {directory}")
        _remove_temp_files(directory)
        files = _list_segments(directory)
        if not files:
            raise FileNotFoundError(f"no WAL segments in {directory}")
        for (prev_seq, _, _), (seq, _, path) in itertools.pairwise(files):
            if seq != prev_seq + 1:
                raise WALCorruptError(
                    path, 0, f"segment sequence gap: segment {prev_seq + 1} is missing"
                )

        replay = _Replay()
        segments: list[_Segment] = []
        last: _ScanResult | None = None
        last_size = 0
        for position, (seq, first_index, path) in enumerate(files):
            with mapped_file(path) as data:
                last = _scan_segment(
                    seq, first_index, path, data, position == len(files) - 1, replay
                )
                last_size = len(data)
            segments.append(last.segment)
        assert last is not None
        replay.finish()
        assert replay.metadata is not None  # every header group has one

        torn = None
        if last.damage is not None and not last.tail_is_zero:
            torn = TornTail(last.segment.path, last.valid_end, last.damage)
            log.warning(
                "WAL %s: cutting a torn tail at byte offset %d (%s)",
                torn.path,
                torn.offset,
                torn.reason,
            )

        wal = cls(
            directory,
            replay.metadata,
            segment_bytes=segment_bytes,
            preallocate=preallocate,
            hard_state=replay.hard_state,
            snapshot_index=replay.snapshot_index,
            snapshot_term=replay.snapshot_term,
            last_index=replay.last_index(),
        )
        wal._segments = segments
        wal._fd = os.open(last.segment.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            wal._repair_tail(last.valid_end, last_size, zero_tail=last.tail_is_zero)
        except BaseException:
            os.close(wal._fd)
            raise
        wal._file_offset = last.valid_end
        recovered = RecoveredLog(
            metadata=replay.metadata,
            hard_state=replay.hard_state,
            snapshot_index=replay.snapshot_index,
            snapshot_term=replay.snapshot_term,
            entries=replay.entries,
            torn_tail=torn,
        )
        return wal, recovered

    def _repair_tail(self, valid_end: int, file_size: int, *, zero_tail: bool) -> None:
        """Make the last segment end (or be zero-filled) right after its valid records."""
        changed = False
        if file_size > valid_end and (not zero_tail or not self._preallocate):
            # Garbage must not survive behind new appends: a later torn write could
            # otherwise expose stale bytes that happen to parse.
            os.ftruncate(self._fd, valid_end)
            file_size = valid_end
            changed = True
        if self._preallocate and file_size < self._segment_bytes:
            _preallocate(self._fd, self._segment_bytes)
            changed = True
        if changed:
            os.fsync(self._fd)

    # -- appending --------------------------------------------------------------

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> int:
        """Append ``entries`` (consecutive) then ``hard_state``; no fsync. Returns the append seq.

        ``entries`` may overwrite a suffix of the log (Raft truncation) but not
        leave a gap after its last index. With nothing to write, returns the
        current append sequence number.
        """
        payload = _encode_entries(entries) if entries else None
        with self._lock:
            self._check_usable()
            if payload is not None:
                first = entries[0].index
                if first < 1 or first > self._last_index + 1:
                    raise ValueError(
                        f"append at index {first} would leave a gap after {self._last_index}"
                    )
                self._append_locked(RecordType.ENTRIES, payload)
                last = entries[-1].index
                segment = self._segments[-1]
                segment.max_entry_index = max(segment.max_entry_index, last)
                if last > self._snapshot_index:
                    self._last_index = last
            if hard_state is not None:
                self._append_locked(
                    RecordType.HARD_STATE,
                    _HARD_STATE.pack(hard_state.term, hard_state.vote, hard_state.commit),
                )
                self._hard_state = HardState(hard_state.term, hard_state.vote, hard_state.commit)
            if payload is None and hard_state is None:
                return self._appended_seq
            return self._finish_append_locked()

    def save_snapshot_marker(self, index: int, term: int) -> int:
        """Append a marker: a snapshot at (``index``, ``term``) now holds the log up to ``index``.

        Write it after the snapshot file is durable. Returns the append seq.
        """
        with self._lock:
            self._check_usable()
            if index < self._snapshot_index or (
                index == self._snapshot_index and term != self._snapshot_term
            ):
                raise ValueError(
                    f"snapshot marker ({index}, term {term}) is older than "
                    f"({self._snapshot_index}, term {self._snapshot_term})"
                )
            self._append_locked(RecordType.SNAPSHOT, _SNAPSHOT_MARKER.pack(index, term))
            self._segments[-1].marker_indexes.append(index)
            self._snapshot_index = index
            self._snapshot_term = term
            self._last_index = max(self._last_index, index)
            return self._finish_append_locked()

    def _append_locked(self, record_type: RecordType, payload: bytes) -> None:
        crc = crc32c(payload, _TYPE_CRC[record_type])
        self._buffer += _FRAME.pack(len(payload), crc, record_type)
        self._buffer += payload

    def _finish_append_locked(self) -> int:
        self._appended_seq += 1
        try:
            if self._file_offset + len(self._buffer) >= self._segment_bytes:
                self._roll_locked()
            elif len(self._buffer) >= FLUSH_BYTES:
                self._flush_locked()
        except BaseException as exc:
            self._failure = exc
            raise
        return self._appended_seq

    def _flush_locked(self) -> None:
        if self._buffer:
            buffer, self._buffer = self._buffer, bytearray()
            pwrite_all(self._fd, buffer, self._file_offset)
            self._file_offset += len(buffer)

    def _roll_locked(self) -> None:
        """Finish the current segment (trimmed to its records, fsynced) and start the next."""
        self._flush_locked()
        if self._preallocate:
            os.ftruncate(self._fd, self._file_offset)
        os.fsync(self._fd)
        self._fsyncs += 1
        # Everything appended so far is in this segment or older ones: durable now.
        self._durable_seq = self._appended_seq
        self._retired_fds.append(self._fd)
        self._fd = -1
        self._start_segment_locked(self._segments[-1].seq + 1, self._last_index + 1)

    def _start_segment_locked(self, seq: int, first_index: int) -> None:
        path = os.path.join(self._dir, segment_name(seq, first_index))
        temp = path + _TEMP_SUFFIX
        header = b"".join(
            (
                _frame(RecordType.SEGMENT, _SEGMENT_HEADER.pack(SEGMENT_MAGIC, seq, first_index)),
                _frame(RecordType.METADATA, self._metadata),
                _frame(
                    RecordType.HARD_STATE,
                    _HARD_STATE.pack(
                        self._hard_state.term, self._hard_state.vote, self._hard_state.commit
                    ),
                ),
                _frame(
                    RecordType.SNAPSHOT,
                    _SNAPSHOT_MARKER.pack(self._snapshot_index, self._snapshot_term),
                ),
            )
        )
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            if self._preallocate:
                _preallocate(fd, self._segment_bytes)
            pwrite_all(fd, header, 0)
            os.fsync(fd)
            os.rename(temp, path)
            fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            _unlink_quietly(temp)
            raise
        self._segments.append(_Segment(seq, first_index, path, 0, [self._snapshot_index]))
        self._fd = fd
        self._file_offset = len(header)

    # -- durability ---------------------------------------------------------------

    def sync(self) -> int:
        """Make every record appended so far durable (fdatasync); return the durable append seq.

        Does nothing when nothing new was appended since the last sync. Appends
        from other threads may proceed while the fsync runs; they are covered by
        the next sync.
        """
        with self._sync_lock:
            with self._lock:
                self._check_usable()
                target = self._appended_seq
                if target == self._durable_seq and not self._buffer:
                    return target
                try:
                    self._flush_locked()
                except BaseException as exc:
                    self._failure = exc
                    raise
                fd = self._fd
                retired, self._retired_fds = self._retired_fds, []
            for old in retired:  # fsynced when they were retired; nobody else syncs them
                os.close(old)
            started = time.perf_counter()
            try:
                sync_data(fd)
            except BaseException as exc:
                with self._lock:
                    self._failure = exc
                raise
            if self.fsync_observer is not None:
                self.fsync_observer(time.perf_counter() - started)
            with self._lock:
                self._fsyncs += 1
                self._durable_seq = max(self._durable_seq, target)
                return self._durable_seq

    def release_to(self, index: int) -> list[str]:
        """Delete the oldest segments that recovery no longer needs; return their paths.

        With L the latest snapshot marker at or below ``index``, a segment is
        deleted when it is older than the first segment holding L (its own
        record or a header copy) and all its entries are at or below L's index
        (entries between L and ``index`` are not yet in any snapshot, so they
        are kept). Deletion goes oldest first and stops at the first segment
        that must stay, so what remains is always a readable suffix. Syncs
        first, so the marker that makes the segments unnecessary is durable.
        """
        self.sync()
        removed: list[str] = []
        with self._lock:
            self._check_usable()
            marker: int | None = None
            holder = 0
            for position, segment in enumerate(self._segments):
                for marker_index in segment.marker_indexes:
                    if marker_index <= index and (marker is None or marker_index > marker):
                        marker, holder = marker_index, position
            if marker is None:
                return removed
            keep_from = 0
            while keep_from < holder and self._segments[keep_from].max_entry_index <= marker:
                keep_from += 1
            doomed = self._segments[:keep_from]
            del self._segments[:keep_from]
        # Outside the lock: deleting 64 MiB segments and syncing the directory
        # takes a while on a busy disk, and appends (the Raft loop) take the lock.
        # The doomed segments are no longer written to nor listed.
        try:
            for segment in doomed:
                os.unlink(segment.path)  # oldest first: a crash leaves a readable suffix
                removed.append(segment.path)
        finally:
            if removed:
                fsync_dir(self._dir)
        return removed

    def close(self) -> None:
        """Hand buffered records to the kernel, fsync, and close. Idempotent."""
        with self._sync_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._failure is None:
                    self._flush_locked()
                    if self._appended_seq != self._durable_seq:
                        sync_data(self._fd)
                        self._fsyncs += 1
                        self._durable_seq = self._appended_seq
            finally:
                for fd in (*self._retired_fds, self._fd):
                    if fd >= 0:
                        os.close(fd)
                self._retired_fds = []
                self._fd = -1

    # -- introspection --------------------------------------------------------------

    @property
    def directory(self) -> str:
        return self._dir

    @property
    def metadata(self) -> bytes:
        return self._metadata

    @property
    def appended_seq(self) -> int:
        """Sequence number of the last append (counts save calls that wrote something)."""
        return self._appended_seq

    @property
    def durable_seq(self) -> int:
        """Every append with a sequence number at or below this is on stable storage."""
        return self._durable_seq

    @property
    def fsync_count(self) -> int:
        """How many fsyncs this WAL has issued (syncs and segment rolls)."""
        return self._fsyncs

    @property
    def segment_paths(self) -> list[str]:
        """Paths of the live segment files, oldest first."""
        with self._lock:
            return [segment.path for segment in self._segments]

    @property
    def position(self) -> tuple[str, int]:
        """``(path, offset)``: the current segment and the offset just after the last append."""
        with self._lock:
            return self._segments[-1].path, self._file_offset + len(self._buffer)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_usable(self) -> None:
        if self._closed:
            raise WALError(f"WAL {self._dir} is closed")
        if self._failure is not None:
            raise WALError(
                f"WAL {self._dir} failed earlier ({self._failure!r}); reopen it to recover"
            ) from self._failure

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WAL({self._dir!r}, segments={len(self._segments)}, appended={self._appended_seq}, durable={self._durable_seq})"


def _preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of zeros for ``fd`` where the filesystem supports it."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:  # e.g. EOPNOTSUPP: an optimisation only
        log.debug("posix_fallocate unsupported (%s); segments grow as written", exc)


def _remove_temp_files(directory: str) -> None:
    """Delete segments whose creation never finished (they were never renamed into place)."""
    removed = False
    for name in os.listdir(directory):
        if name.endswith(SEGMENT_SUFFIX + _TEMP_SUFFIX):
            _unlink_quietly(os.path.join(directory, name))
            removed = True
    if removed:
        fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
