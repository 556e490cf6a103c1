"""Property tests of WAL recovery under torn writes and bit rot (hypothesis).

A random history of appends (with Raft truncations), hard states, snapshot
markers (local compactions and snapshots from a leader) and syncs is written
against a model of what recovery must return after each record. Then the files
are damaged:

* tail damage (cut, zero-fill or garbage from an offset at or after the last
  sync point of the last segment): recovery must return exactly the model
  state after the records that are still intact, which includes everything
  synced; and appends after recovery must follow that prefix;
* one flipped byte anywhere: a prefix when the damaged record is the last one
  of the last segment (or the byte is in the zero tail), otherwise
  WALCorruptError naming the file and the damaged record's offset.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consensus.raft.types import Entry, HardState
from consensus.storage.wal import FRAME_BYTES, HEADER_GROUP, WAL, RecordType, WALCorruptError

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("WAL_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class State:
    """What recovery must return: the replayed log after some number of records."""

    hard_state: HardState
    snapshot_index: int
    snapshot_term: int
    entries: tuple[Entry, ...]


@dataclass
class Model:
    """The Raft log as a member sees it, record by record."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot_index: int = 0
    snapshot_term: int = 0
    entries: list[Entry] = field(default_factory=list)
    term: int = 1

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    def state(self) -> State:
        return State(
            HardState(self.hard_state.term, self.hard_state.vote, self.hard_state.commit),
            self.snapshot_index,
            self.snapshot_term,
            tuple(self.entries),
        )


@dataclass
class Written:
    directory: str
    states: list[State]
    """``states[k]``: what recovery must return when exactly k body records survive."""
    synced: int
    """Body records known durable (synced, or in a finished segment)."""
    segment_bytes: int
    preallocate: bool


def write_history(data: st.DataObject, directory: str) -> Written:
    """Write a random history, one body record per operation, and close the WAL."""
    segment_bytes = data.draw(st.sampled_from([350, 600, 1200, 1 << 16]), label="segment_bytes")
    preallocate = data.draw(st.booleans(), label="preallocate")
    wal = WAL.create(directory, b"meta", segment_bytes=segment_bytes, preallocate=preallocate)
    payloads = random.Random(data.draw(st.integers(0, 2**32), label="payload seed"))
    model = Model()
    states = [model.state()]
    synced = 0
    for _ in range(data.draw(st.integers(1, 30), label="operations")):
        kind = data.draw(
            st.sampled_from(["append", "append", "append", "hard_state", "marker", "sync"])
        )
        if kind == "append":
            back = data.draw(st.integers(0, 3)) if model.entries else 0
            first = max(model.snapshot_index + 1, model.last_index() + 1 - back)
            if first <= model.last_index():
                model.term += 1  # a new leader overwrites a suffix
            sizes = data.draw(st.lists(st.integers(0, 60), min_size=1, max_size=4))
            batch = [
                Entry(model.term, first + i, data=payloads.randbytes(size)) for i, size in enumerate(sizes)
            ]
            wal.save(None, batch)
            del model.entries[first - model.snapshot_index - 1 :]
            model.entries.extend(batch)
        elif kind == "hard_state":
            commit = data.draw(st.integers(0, model.last_index()))
            model.hard_state = HardState(model.term, data.draw(st.integers(0, 3)), commit)
            wal.save(model.hard_state, [])
        elif kind == "marker":
            local = bool(model.entries) and data.draw(st.booleans())
            if local:  # compaction at an entry we have
                index = data.draw(st.integers(model.snapshot_index + 1, model.last_index()))
                term = model.entries[index - model.snapshot_index - 1].term
                model.entries = model.entries[index - model.snapshot_index :]
            else:  # a snapshot from a leader of a newer term replaces the log
                index = data.draw(
                    st.integers(model.snapshot_index + 1, model.last_index() + 3)
                )
                model.term += 1
                term = model.term
                model.entries = []
            model.snapshot_index, model.snapshot_term = index, term
            wal.save_snapshot_marker(index, term)
        else:
            wal.sync()
            synced = len(states) - 1
            continue
        states.append(model.state())
    wal.close()
    return Written(directory, states, synced, segment_bytes, preallocate)


@dataclass(frozen=True)
class Record:
    path: str
    start: int
    end: int
    in_header_group: bool
    body_number: int
    """How many body records precede this one in the whole WAL (header records: -1)."""


def segment_files(directory: str) -> list[str]:
    return sorted(str(p) for p in Path(directory).glob("*.wal"))


def records(directory: str) -> tuple[list[Record], dict[str, int]]:
    """Every record of every segment, and each segment's logical end (before zero tails)."""
    found: list[Record] = []
    ends: dict[str, int] = {}
    body = 0
    for path in segment_files(directory):
        content = Path(path).read_bytes()
        offset = 0
        count = 0
        while offset + FRAME_BYTES <= len(content):
            length, _, record_type = struct.unpack_from("<IIB", content, offset)
            if record_type == 0:
                break
            end = offset + FRAME_BYTES + length
            header = count < len(HEADER_GROUP)
            found.append(Record(path, offset, end, header, -1 if header else body))
            if not header:
                assert record_type != RecordType.SEGMENT
                body += 1
            count += 1
            offset = end
        ends[path] = offset
    return found, ends


def assert_recovers(directory: str, written: Written, expected: State) -> None:
    wal, recovered = WAL.open(
        directory, segment_bytes=written.segment_bytes, preallocate=written.preallocate
    )
    try:
        assert recovered.metadata == b"meta"
        assert recovered.hard_state == expected.hard_state
        assert (recovered.snapshot_index, recovered.snapshot_term) == (
            expected.snapshot_index,
            expected.snapshot_term,
        )
        assert recovered.entries == list(expected.entries)
        # Appends after recovery follow the surviving prefix.
        extra = Entry(
            max([e.term for e in expected.entries] + [expected.snapshot_term, 1]) + 1,
            (expected.entries[-1].index if expected.entries else expected.snapshot_index) + 1,
            data=b"after recovery",
        )
        wal.save(None, [extra])
    finally:
        wal.close()
    wal, again = WAL.open(directory, segment_bytes=written.segment_bytes)
    wal.close()
    assert again.torn_tail is None
    assert again.entries == [*expected.entries, extra]


@PROPERTY_SETTINGS
@given(st.data())
def test_tail_damage_recovers_exactly_the_intact_prefix(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        written = write_history(data, directory)
        found, ends = records(directory)
        last_path = segment_files(directory)[-1]
        last_records = [r for r in found if r.path == last_path]
        header_end = last_records[len(HEADER_GROUP) - 1].end
        # Synced data cannot be torn: damage starts at or after the last sync point.
        synced_end = max(
            [r.end for r in last_records if 0 <= r.body_number < written.synced] + [header_end]
        )
        cut = data.draw(st.integers(synced_end, ends[last_path]), label="cut")
        damage = data.draw(st.sampled_from(["truncate", "zeros", "garbage"]), label="damage")
        size = os.path.getsize(last_path)
        original = Path(last_path).read_bytes()
        with open(last_path, "r+b") as f:
            if damage == "truncate":
                f.truncate(cut)
            else:
                span = max(0, min(size, ends[last_path] + 64) - cut)
                f.seek(cut)
                noise = random.Random(data.draw(st.integers(0, 2**32), label="noise"))
                f.write(bytes(span) if damage == "zeros" else noise.randbytes(span))

        event(f"tail damage: {damage}, {'records lost' if cut < ends[last_path] else 'no record lost'}")
        event(f"segments: {'several' if len(segment_files(directory)) > 1 else 'one'}")
        # Intact: the body records before the first one whose bytes changed (zeros
        # written over bytes that were zero already are no damage).
        damaged = Path(last_path).read_bytes()
        intact = len(written.states) - 1
        for r in found:
            changed = damaged[r.start : r.end] != original[r.start : r.end]
            if r.path == last_path and r.body_number >= 0 and changed:
                intact = r.body_number
                break
        assert intact >= written.synced
        assert_recovers(directory, written, written.states[intact])


@PROPERTY_SETTINGS
@given(st.data())
def test_one_flipped_byte_is_a_torn_tail_or_a_named_corruption(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        written = write_history(data, directory)
        found, ends = records(directory)
        paths = segment_files(directory)
        body = [r for r in found if not r.in_header_group]
        aim = data.draw(st.sampled_from(["last record", "a record", "a record", "anywhere"]))
        last_body = [r for r in body if r.path == paths[-1]]
        if aim == "last record" and last_body:  # the torn-tail case
            aimed = last_body[-1]
            path = aimed.path
            offset = data.draw(st.integers(aimed.start, aimed.end - 1), label="offset")
        elif aim != "anywhere" and body:
            aimed = data.draw(st.sampled_from(body), label="record")
            path = aimed.path
            offset = data.draw(st.integers(aimed.start, aimed.end - 1), label="offset")
        else:  # anywhere, including the zero tail of a preallocated last segment
            path = data.draw(st.sampled_from(paths), label="segment")
            limit = os.path.getsize(path) if path == paths[-1] else ends[path]
            offset = data.draw(st.integers(0, limit - 1), label="offset")
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ data.draw(st.integers(1, 255), label="xor")]))

        in_segment = [r for r in found if r.path == path]
        hit = next((r for r in in_segment if r.start <= offset < r.end), None)
        if hit is None:  # in the zero tail of the last segment: garbage after the log
            event("flip in the zero tail")
            assert path == paths[-1]
            wal, recovered = WAL.open(directory, segment_bytes=written.segment_bytes)
            wal.close()
            assert recovered.torn_tail is not None and recovered.torn_tail.offset == ends[path]
            assert recovered.entries == list(written.states[-1].entries)
            return
        is_tail = path == paths[-1] and hit is in_segment[-1] and not hit.in_header_group
        if is_tail:
            event("flip in the last record: torn tail")
            assert_recovers(directory, written, written.states[hit.body_number])
            return
        event(
            "flip in a header group"
            if hit.in_header_group
            else "flip in an older segment"
            if path != paths[-1]
            else "flip followed by valid records"
        )
        with pytest.raises(WALCorruptError) as info:
            WAL.open(directory, segment_bytes=written.segment_bytes)
        assert (info.value.path, info.value.offset) == (path, hit.start)
        assert path in str(info.value) and f"byte offset {hit.start}" in str(info.value)


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_release_to_never_changes_what_recovery_returns(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        written = write_history(data, directory)
        wal, before = WAL.open(directory, segment_bytes=written.segment_bytes)
        released = wal.release_to(data.draw(st.integers(0, 200), label="release_to"))
        wal.close()
        for path in released:
            assert not os.path.exists(path)
        wal, after = WAL.open(directory, segment_bytes=written.segment_bytes)
        wal.close()
        assert after.entries == before.entries
        assert after.hard_state == before.hard_state
        assert (after.snapshot_index, after.snapshot_term) == (
            before.snapshot_index,
            before.snapshot_term,
        )
