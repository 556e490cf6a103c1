"""Unit tests of the write-ahead log: round trips, segments, truncation, markers, release, damage."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from consensus.raft.types import Entry, EntryType, HardState
from consensus.storage.wal import (
    FRAME_BYTES,
    WAL,
    RecordType,
    WALCorruptError,
    WALError,
    parse_segment_name,
    segment_name,
)

SEGMENT = 1 << 16
"""Segment size for tests that need one segment: small, so scanning a preallocated one is quick."""


def entries(first: int, last: int, term: int = 1, size: int = 8) -> list[Entry]:
    return [Entry(term, i, data=bytes([i % 251]) * size) for i in range(first, last + 1)]


def record_offsets(path: str) -> list[tuple[int, int, int]]:
    """``(start, end, type)`` of each record in a segment file, stopping at zeros/garbage."""
    data = Path(path).read_bytes()
    spans = []
    offset = 0
    while offset + FRAME_BYTES <= len(data):
        length, _, record_type = struct.unpack_from("<IIB", data, offset)
        if record_type not in {int(t) for t in RecordType}:
            break
        end = offset + FRAME_BYTES + length
        spans.append((offset, end, record_type))
        offset = end
    return spans


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


def test_create_open_round_trip(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    assert not WAL.exists(directory)
    wal = WAL.create(directory, b"node=1 cluster=7")
    assert WAL.exists(directory)
    written = [
        Entry(1, 1, EntryType.NORMAL, b""),
        Entry(1, 2, EntryType.CONF_CHANGE, b"\x00" * 9),
        Entry(2, 3, EntryType.NORMAL, os.urandom(1000)),
    ]
    wal.save(HardState(2, 1, 2), written)
    wal.save(HardState(2, 1, 3), [])
    wal.sync()
    wal.close()

    reopened, recovered = WAL.open(directory)
    assert recovered.metadata == b"node=1 cluster=7"
    assert recovered.hard_state == HardState(2, 1, 3)
    assert (recovered.snapshot_index, recovered.snapshot_term) == (0, 0)
    assert recovered.entries == written
    assert recovered.torn_tail is None
    reopened.close()


def test_empty_wal_recovers_empty(tmp_path: Path) -> None:
    WAL.create(tmp_path, b"").close()
    wal, recovered = WAL.open(tmp_path)
    assert recovered.entries == [] and recovered.hard_state == HardState()
    wal.close()


def test_create_refuses_existing_and_open_refuses_missing(tmp_path: Path) -> None:
    WAL.create(tmp_path / "a", b"m").close()
    with pytest.raises(FileExistsError):
        WAL.create(tmp_path / "a", b"m")
    with pytest.raises(FileNotFoundError):
        WAL.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        WAL.open(tmp_path / "empty")


def test_segment_names() -> None:
    name = segment_name(3, 0x1F)
    assert name == "0000000000000003-000000000000001f.wal"
    assert parse_segment_name(name) == (3, 0x1F)
    assert parse_segment_name("junk.wal") is None


@pytest.mark.parametrize("preallocate", [True, False])
def test_segments_roll_and_recover_across_them(tmp_path: Path, preallocate: bool) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=1024, preallocate=preallocate)
    for i in range(1, 201):
        wal.save(HardState(1, 1, i - 1), entries(i, i, size=40))
    paths = wal.segment_paths
    assert len(paths) > 5
    # Names carry consecutive sequence numbers and the first index expected in each.
    parsed = [parse_segment_name(os.path.basename(p)) or (0, 0) for p in paths]
    assert [seq for seq, _ in parsed] == list(range(1, len(paths) + 1))
    assert parsed[0] == (1, 1)
    firsts = [first for _, first in parsed]
    assert firsts == sorted(firsts)
    wal.close()
    # Finished segments are trimmed to their records even when preallocated.
    for path in paths[:-1]:
        spans = record_offsets(path)
        assert spans[-1][1] == os.path.getsize(path)

    wal, recovered = WAL.open(tmp_path, segment_bytes=1024, preallocate=preallocate)
    assert recovered.entries == entries(1, 200, size=40)
    assert recovered.hard_state == HardState(1, 1, 199)
    # Appending after recovery continues the log.
    wal.save(None, entries(201, 210, size=40))
    wal.close()
    wal, recovered = WAL.open(tmp_path, segment_bytes=1024)
    assert recovered.entries == entries(1, 210, size=40)
    wal.close()


def test_conflicting_append_truncates_suffix(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=700)
    wal.save(None, entries(1, 10, term=1))
    wal.save(None, entries(6, 8, term=2))  # a new leader overwrote 6..10
    wal.save(None, entries(9, 9, term=2))
    wal.close()
    wal, recovered = WAL.open(tmp_path)
    assert recovered.entries == entries(1, 5, term=1) + entries(6, 9, term=2)
    wal.close()


def test_append_rejects_gaps_and_non_consecutive_batches(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    wal.save(None, entries(1, 3))
    with pytest.raises(ValueError, match="gap"):
        wal.save(None, entries(5, 6))
    with pytest.raises(ValueError, match="consecutive"):
        wal.save(None, [Entry(1, 4), Entry(1, 6)])
    wal.save_snapshot_marker(2, 1)
    with pytest.raises(ValueError, match="older"):
        wal.save_snapshot_marker(1, 1)
    with pytest.raises(ValueError, match="older"):
        wal.save_snapshot_marker(2, 5)
    wal.close()


def test_snapshot_marker_drops_covered_entries(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    wal.save(HardState(1, 1, 10), entries(1, 10))
    wal.save_snapshot_marker(6, 1)
    wal.save(None, entries(11, 12))
    wal.close()
    wal, recovered = WAL.open(tmp_path)
    assert (recovered.snapshot_index, recovered.snapshot_term) == (6, 1)
    assert recovered.entries == entries(7, 12)
    wal.close()


def test_snapshot_from_leader_replaces_a_diverging_log(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    wal.save(None, entries(1, 20, term=1))
    # The leader's snapshot at 15 has term 3: our entry 15 (term 1) conflicts.
    wal.save_snapshot_marker(15, 3)
    wal.save(HardState(3, 2, 15), entries(16, 17, term=3))
    wal.close()
    wal, recovered = WAL.open(tmp_path)
    assert (recovered.snapshot_index, recovered.snapshot_term) == (15, 3)
    assert recovered.entries == entries(16, 17, term=3)
    wal.close()


def test_snapshot_beyond_the_log(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    wal.save(None, entries(1, 5))
    wal.save_snapshot_marker(50, 4)
    wal.close()
    wal, recovered = WAL.open(tmp_path)
    assert (recovered.snapshot_index, recovered.entries) == (50, [])
    wal.save(None, entries(51, 52, term=4))
    wal.close()
    wal, recovered = WAL.open(tmp_path)
    assert recovered.entries == entries(51, 52, term=4)
    wal.close()


def test_release_to_deletes_only_what_recovery_does_not_need(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=600)
    for i in range(1, 101):
        wal.save(HardState(1, 1, i), entries(i, i, size=40))
    before = wal.segment_paths
    assert len(before) > 6
    # No snapshot marker yet: nothing may go.
    assert wal.release_to(100) == []

    wal.save_snapshot_marker(60, 1)
    removed = wal.release_to(60)
    assert removed and removed == before[: len(removed)]
    for path in removed:
        assert not os.path.exists(path)
    assert wal.segment_paths[: len(before) - len(removed)] == before[len(removed) :]
    # Every deleted segment held entries at or below the marker only: the first
    # kept segment starts at or before the entry after the marker.
    kept_first = parse_segment_name(os.path.basename(wal.segment_paths[0]))
    assert kept_first is not None and kept_first[1] <= 61
    wal.save(None, entries(101, 105, size=40))
    wal.close()

    wal, recovered = WAL.open(tmp_path, segment_bytes=600)
    assert (recovered.snapshot_index, recovered.snapshot_term) == (60, 1)
    assert recovered.entries == entries(61, 105, size=40)
    assert recovered.hard_state == HardState(1, 1, 100)
    # Release again after a later marker, from the reopened WAL.
    wal.save_snapshot_marker(104, 1)
    wal.release_to(200)
    wal.close()
    wal, recovered = WAL.open(tmp_path, segment_bytes=600)
    assert recovered.entries == entries(105, 105, size=40)
    wal.close()


def test_release_to_keeps_entries_newer_than_the_marker(tmp_path: Path) -> None:
    # Segment 1 holds 1..30; the marker at 10 must not let release_to(30) drop 11..30.
    wal = WAL.create(tmp_path, b"m", segment_bytes=1 << 20)
    wal.save(None, entries(1, 30))
    wal.save_snapshot_marker(10, 1)
    assert wal.release_to(30) == []
    wal.close()
    wal, recovered = WAL.open(tmp_path)
    assert recovered.entries == entries(11, 30)
    wal.close()


def test_released_wal_without_the_anchoring_marker_is_refused(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=600)
    for i in range(1, 60):
        wal.save(None, entries(i, i, size=40))
    paths = wal.segment_paths
    wal.close()
    os.unlink(paths[0])  # someone deleted a segment by hand
    with pytest.raises(WALCorruptError, match="missing"):
        WAL.open(tmp_path)


def test_sequence_gap_is_refused(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=600)
    for i in range(1, 60):
        wal.save(None, entries(i, i, size=40))
    paths = wal.segment_paths
    wal.close()
    os.unlink(paths[2])
    with pytest.raises(WALCorruptError, match="segment 3 is missing") as info:
        WAL.open(tmp_path)
    assert info.value.path == paths[3]


@pytest.mark.parametrize("preallocate", [True, False])
def test_torn_tail_is_cut_and_appends_follow_it(tmp_path: Path, preallocate: bool) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT, preallocate=preallocate)
    wal.save(None, entries(1, 5))
    wal.sync()
    wal.save(None, entries(6, 8))
    path, end = wal.position
    wal.close()
    last_start = record_offsets(path)[-1][0]
    os.truncate(path, end - 3)  # the last record was torn

    wal, recovered = WAL.open(tmp_path, segment_bytes=SEGMENT, preallocate=preallocate)
    assert recovered.entries == entries(1, 5)
    assert recovered.torn_tail is not None
    assert (recovered.torn_tail.path, recovered.torn_tail.offset) == (path, last_start)
    wal.save(None, entries(6, 7, term=2))
    wal.close()
    wal, recovered = WAL.open(tmp_path)
    assert recovered.entries == entries(1, 5) + entries(6, 7, term=2)
    assert recovered.torn_tail is None
    wal.close()


def test_zero_filled_tail_is_a_torn_tail(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", preallocate=False)
    wal.save(None, entries(1, 3))
    path, end = wal.position
    wal.close()
    last_start = record_offsets(path)[-1][0]
    with open(path, "r+b") as f:  # the last record's pages never reached the disk
        f.seek(last_start)
        f.write(b"\x00" * (end - last_start + 4096))
    wal, recovered = WAL.open(tmp_path, preallocate=False)
    assert recovered.entries == []
    assert os.path.getsize(path) == last_start  # repaired
    wal.close()


def test_corruption_followed_by_valid_records_is_refused(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    for i in range(1, 6):
        wal.save(None, entries(i, i))
    path, _ = wal.position
    wal.close()
    spans = record_offsets(path)
    start, end, _ = spans[-3]  # entries 3
    flip(path, end - 1)
    with pytest.raises(WALCorruptError) as info:
        WAL.open(tmp_path)
    assert info.value.path == path and info.value.offset == start
    assert path in str(info.value) and f"byte offset {start}" in str(info.value)
    assert "CRC mismatch" in str(info.value)


def test_impossible_length_followed_by_valid_records_is_refused(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    for i in range(1, 6):
        wal.save(None, entries(i, i))
    path, _ = wal.position
    wal.close()
    start = record_offsets(path)[-2][0]
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(struct.pack("<I", 0xFFFFFFF0))
    with pytest.raises(WALCorruptError, match=f"byte offset {start}.*followed by an intact record"):
        WAL.open(tmp_path)


def test_damage_in_an_older_segment_is_refused(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=600)
    for i in range(1, 40):
        wal.save(None, entries(i, i, size=40))
    first = wal.segment_paths[0]
    wal.close()
    start, end, _ = record_offsets(first)[-1]  # the very last record of segment 1
    flip(first, end - 1)
    with pytest.raises(WALCorruptError, match="not the last") as info:
        WAL.open(tmp_path)
    assert (info.value.path, info.value.offset) == (first, start)


def test_damage_in_the_header_group_is_refused(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    path, _ = wal.position
    wal.close()
    _start, end, _ = record_offsets(path)[1]  # METADATA
    flip(path, end - 1)
    with pytest.raises(WALCorruptError, match="header group"):
        WAL.open(tmp_path)


def test_unfinished_segment_creation_is_ignored(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    wal.save(None, entries(1, 2))
    wal.close()
    leftover = tmp_path / (segment_name(2, 3) + ".tmp")
    leftover.write_bytes(b"partial")
    wal, recovered = WAL.open(tmp_path)
    assert recovered.entries == entries(1, 2)
    assert not leftover.exists()
    wal.close()


def test_sync_returns_durable_seq_and_skips_idle_fsyncs(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    seq = wal.save(None, entries(1, 1))
    assert wal.durable_seq < seq
    assert wal.sync() == seq == wal.durable_seq
    fsyncs = wal.fsync_count
    assert wal.sync() == seq
    assert wal.fsync_count == fsyncs
    assert wal.save(None, []) == seq  # nothing to write
    wal.close()
    with pytest.raises(WALError, match="closed"):
        wal.save(None, entries(2, 2))
    wal.close()  # idempotent


def test_failed_wal_refuses_further_work(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, b"m", segment_bytes=SEGMENT)
    wal.save(None, entries(1, 1))
    os.close(wal._fd)  # simulate the device failing under us
    with pytest.raises(OSError):
        wal.sync()
    with pytest.raises(WALError, match="failed earlier"):
        wal.save(None, entries(2, 2))
    wal._fd = -1
    wal.close()
