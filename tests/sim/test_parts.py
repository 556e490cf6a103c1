"""The simulator's parts on their own: the disk, the network, the checker, the command."""

from __future__ import annotations

import json
import random

import pytest

from consensus.cli import main
from consensus.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from consensus.sim.disk import Disk
from consensus.sim.invariants import Checker, InvariantViolation
from consensus.sim.network import EventKind, Network, NetworkOptions, split_links
from consensus.sim.throughput import measure


def _entries(lo: int, hi: int, term: int) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, b"k=%d" % i) for i in range(lo, hi + 1)]


# -- disk -------------------------------------------------------------------------------
def test_a_crash_loses_exactly_the_unsynced_writes() -> None:
    disk = Disk()
    disk.write_entries(_entries(1, 3, 1))
    disk.write_hard_state(HardState(1, 1, 2))
    disk.sync()
    disk.write_entries(_entries(4, 5, 1))
    disk.write_hard_state(HardState(2, 0, 3))
    disk.crash()
    storage = disk.load()
    assert storage.last_index() == 3
    assert storage.hard_state == HardState(1, 1, 2)


def test_an_app_snapshot_syncs_first_and_compacts() -> None:
    disk = Disk()
    disk.write_entries(_entries(1, 10, 1))
    disk.write_hard_state(HardState(1, 0, 10))  # not synced yet
    disk.save_app_snapshot(8, ConfState([1, 2, 3]), b"k=8", compact_to=6)
    disk.crash()
    storage = disk.load()
    assert storage.snapshot().metadata.index == 8
    assert storage.first_index() == 9
    assert storage.last_index() == 10
    assert storage.hard_state.commit == 10


def test_a_received_snapshot_replaces_the_log() -> None:
    disk = Disk()
    disk.write_entries(_entries(1, 4, 1))
    snap = Snapshot(b"", SnapshotMetadata(20, 3, ConfState([1, 2, 3])))
    disk.write_snapshot(snap)
    disk.write_entries(_entries(21, 22, 3))
    disk.write_hard_state(HardState(3, 0, 20))
    disk.sync()
    storage = disk.load()
    assert (storage.first_index(), storage.last_index()) == (21, 22)
    assert storage.term(20) == 3


# -- network ------------------------------------------------------------------------------
def _msg(t: MessageType, frm: int, to: int, index: int = 0) -> Message:
    return Message(type=t, from_=frm, to=to, index=index)


def _drain(net: Network, until: int) -> list[tuple[EventKind, int]]:
    out = []
    for now in range(until + 1):
        while (ev := net.pop_due(now)) is not None:
            out.append((ev.kind, ev.message.index))
    return out


def test_links_are_fifo_without_reordering() -> None:
    net = Network(random.Random(3), NetworkOptions(max_delay=5))
    for i in range(50):
        net.send(_msg(MessageType.APP, 1, 2, i), 0, 0)
    got = [index for _, index in _drain(net, 10)]
    assert got == list(range(50))


def test_reordering_comes_from_random_delays() -> None:
    net = Network(random.Random(3), NetworkOptions(max_delay=5, reorder=1.0))
    for i in range(50):
        net.send(_msg(MessageType.APP, 1, 2, i), 0, 0)
    got = [index for _, index in _drain(net, 10)]
    assert sorted(got) == list(range(50)) and got != list(range(50))


def test_lost_snapshots_are_reported_to_the_sender() -> None:
    net = Network(random.Random(1), NetworkOptions(drop=1.0, report_unreachable=0.0))
    net.send(_msg(MessageType.SNAP, 1, 2), 0, 0)
    net.send(_msg(MessageType.APP, 1, 2), 0, 0)
    assert _drain(net, 10) == [(EventKind.SNAPSHOT_FAILED, 0)]


def test_partitions_cut_messages_in_flight_and_heal_independently() -> None:
    net = Network(random.Random(1), NetworkOptions(min_delay=2, max_delay=2, report_unreachable=0.0))
    net.send(_msg(MessageType.SNAP, 1, 2), 0, 0)
    net.send(_msg(MessageType.HEARTBEAT, 3, 2), 0, 0)
    a = net.partition(split_links([1], [2, 3]))
    b = net.partition({(3, 2)})
    assert _drain(net, 4) == [(EventKind.SNAPSHOT_FAILED, 0)]
    net.heal_partition(a)
    assert not net.is_healed() and net.blocked_links() == [(3, 2)]
    net.heal_partition(b)
    assert net.is_healed()


# -- checker ------------------------------------------------------------------------------
def test_two_leaders_in_one_term_are_a_violation() -> None:
    from consensus.raft.log import RaftLog
    from consensus.raft.storage import MemoryStorage

    checker = Checker()
    log = RaftLog(MemoryStorage())
    checker.observe_leader(1, 5, log)
    checker.observe_leader(1, 5, log)
    with pytest.raises(InvariantViolation, match="election-safety"):
        checker.observe_leader(2, 5, log)


def test_log_matching_needs_equal_predecessors() -> None:
    checker = Checker()
    checker.observe_append(1, _entries(5, 6, 3), prev_term=2)
    checker.observe_append(2, _entries(6, 6, 3), prev_term=3)  # entry 5 of term 3 now
    with pytest.raises(InvariantViolation, match="log-matching"):
        checker.observe_append(3, _entries(6, 6, 3), prev_term=1)


def test_applying_a_different_entry_is_a_violation() -> None:
    checker = Checker()
    for e in _entries(1, 3, 1):
        checker.observe_apply(1, e)
    with pytest.raises(InvariantViolation, match="state-machine-safety"):
        checker.observe_apply(2, Entry(2, 2, EntryType.NORMAL, b"k=2"))


def test_a_stale_read_is_a_violation() -> None:
    checker = Checker()
    for e in _entries(1, 3, 1):
        checker.observe_apply(1, e)
    checker.acknowledge_write(b"k", 3)
    rec = checker.issue_read(b"r1", 1, 0, b"k", now=0)
    checker.check_read(rec, 3, 3, b"3", now=1)
    with pytest.raises(InvariantViolation, match="linearizable-read"):
        checker.check_read(rec, 3, 3, b"2", now=1)


# -- command ------------------------------------------------------------------------------
def test_replaying_one_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--seed", "4", "--members", "3", "--ticks", "60"]) == 0
    assert "seed 4 (3 members): ok" in capsys.readouterr().out


def test_a_small_sweep_reports_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "--seeds", "4", "--ticks", "60", "--workers", "1", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seeds"] == summary["passed"] == 4
    assert summary["committed_entries"] > 0
    assert summary["seeds_per_second"] > 0
    assert summary["committed_per_cpu_second"] > 0


def test_throughput_measures_something() -> None:
    result = measure(2000, batch=100)
    assert result.entries == 2000
    assert result.entries_per_cpu_second > 0
