"""Pure parts of the Cluster/Maintenance work: auto-compaction schedules, quota costs, backup files.

The schedules run in virtual time (an injected clock and sleep), so a
5-minute revision interval or an hour-long retention takes no real time.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc import CompactedError
from consensus.server import backup, quota
from consensus.server.auto_compaction import (
    MODE_PERIODIC,
    MODE_REVISION,
    AutoCompactor,
    CompactionPolicy,
    parse_go_duration,
    parse_policy,
)
from consensus.server.etcd_state import Alarm
from consensus.server.internal_request import Op
from consensus.server.maintenance_service import alarm_text
from consensus.server.snapshot_command import humanize_bytes, render_table


# -- retention parsing (etcd 3.4's rules) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h30m", 5400.0), ("1.5s", 1.5), ("300ms", 0.3), ("0", 0.0), ("2h", 7200.0), ("1m30s", 90.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "x", "1m30", "h"])
def test_malformed_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_policies() -> None:
    # A bare integer is hours in periodic mode (etcd 3.4), a count in revision mode.
    assert parse_policy("periodic", "1") == CompactionPolicy(MODE_PERIODIC, 3600.0)
    assert parse_policy("periodic", "10m") == CompactionPolicy(MODE_PERIODIC, 600.0)
    assert parse_policy("revision", "1000") == CompactionPolicy(MODE_REVISION, 1000)
    assert parse_policy("periodic", "0") is None
    assert parse_policy("revision", "0") is None
    for mode, retention in (("periodic", "abc"), ("revision", "1h"), ("revision", "-5"), ("x", "1")):
        with pytest.raises(ValueError):
            parse_policy(mode, retention)


# -- the schedules in virtual time -------------------------------------------------------------------
class VirtualTime:
    """A clock and a sleep that advance together; ``revision`` moves with time as the test says."""

    def __init__(self, revision_at: Callable[[float], int]) -> None:
        self.now = 0.0
        self.revision_at = revision_at
        self.stop_at = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now > self.stop_at:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    def revision(self) -> int:
        return self.revision_at(self.now)


async def _run(compactor: AutoCompactor, vt: VirtualTime, until: float) -> None:
    vt.stop_at = until
    with pytest.raises(asyncio.CancelledError):
        await compactor.run()


async def test_periodic_keeps_one_retention_window() -> None:
    # One revision per second; retention 10 s: every 10 s compact to the revision of 10 s ago.
    vt = VirtualTime(lambda t: 1 + int(t))
    done: list[int] = []

    async def compact(rev: int) -> object:
        done.append(rev)
        return rev

    c = AutoCompactor(
        CompactionPolicy(MODE_PERIODIC, 10.0),
        current_revision=vt.revision, compact=compact, clock=vt.clock, sleep=vt.sleep,
    )
    c.resume()
    await _run(c, vt, 35.5)
    assert len(done) == 3
    for i, rev in enumerate(done, start=1):
        # At t = 10 i (+ one sampling step), the target was sampled ~10 s earlier.
        assert abs(rev - (1 + 10 * i - 10)) <= 2, done
    assert c.compacted == done


async def test_periodic_long_retention_compacts_hourly_after_the_first_window() -> None:
    vt = VirtualTime(lambda t: 1 + int(t // 60))  # a revision a minute
    done: list[int] = []

    async def compact(rev: int) -> object:
        done.append(rev)
        return rev

    c = AutoCompactor(
        CompactionPolicy(MODE_PERIODIC, 3 * 3600.0),
        current_revision=vt.revision, compact=compact, clock=vt.clock, sleep=vt.sleep,
    )
    c.resume()
    await _run(c, vt, 5 * 3600 + 1)
    # Nothing before 3 h; then about once an hour, each time ~3 h of history kept.
    assert len(done) == 3
    assert done == sorted(done)
    assert all(abs(rev - (1 + (3 + i) * 60 - 180)) <= 10 for i, rev in enumerate(done))


async def test_paused_compactor_samples_but_does_not_compact() -> None:
    vt = VirtualTime(lambda t: 1 + int(t))
    done: list[int] = []

    async def compact(rev: int) -> object:
        done.append(rev)
        return rev

    c = AutoCompactor(
        CompactionPolicy(MODE_PERIODIC, 5.0),
        current_revision=vt.revision, compact=compact, clock=vt.clock, sleep=vt.sleep,
    )
    c.on_leadership(False)
    await _run(c, vt, 30)
    assert done == []


async def test_revision_mode_every_five_minutes_and_compacted_counts_as_done() -> None:
    vt = VirtualTime(lambda t: 1 + int(t))  # a revision a second
    calls: list[int] = []

    async def compact(rev: int) -> object:
        calls.append(rev)
        if len(calls) == 1:
            raise CompactedError()  # someone else compacted past it: done, not retried
        if len(calls) == 2:
            raise RuntimeError("no leader")  # a failure: retried at the next interval
        return rev

    c = AutoCompactor(
        CompactionPolicy(MODE_REVISION, 100),
        current_revision=vt.revision, compact=compact, clock=vt.clock, sleep=vt.sleep,
    )
    c.resume()
    await _run(c, vt, 3 * 300 + 1)
    assert calls == [301 - 100, 601 - 100, 901 - 100]
    assert c.compacted == [201, 801]


# -- quota -----------------------------------------------------------------------------------------
def test_quota_costs_follow_etcd() -> None:
    put = pb.PutRequest(key=b"k" * 10, value=b"v" * 100)
    assert quota.request_cost(Op.PUT, put) == 256 + 110
    txn = pb.TxnRequest(
        success=[pb.RequestOp(request_put=put), pb.RequestOp(request_put=put)],
        failure=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"k"))],
    )
    assert quota.request_cost(Op.TXN, txn) == 2 * (256 + 110)  # the larger branch
    assert quota.request_cost(Op.LEASE_GRANT, pb.LeaseGrantRequest(TTL=10)) == 64
    assert quota.request_cost(Op.DELETE_RANGE, pb.DeleteRangeRequest(key=b"k")) == 0
    assert quota.effective_quota(0) == 2 * 1024**3
    assert quota.effective_quota(-1) is None
    assert quota.effective_quota(4096) == 4096


def test_alarm_text_is_etcds() -> None:
    assert alarm_text(Alarm(7650719446848894046, pb.NOSPACE)) == "memberID:7650719446848894046 alarm:NOSPACE "
    assert alarm_text(Alarm(0, pb.CORRUPT)) == "alarm:CORRUPT "


# -- backup files ----------------------------------------------------------------------------------
def _meta() -> backup.BackupMeta:
    return backup.BackupMeta(
        revision=7, compact_revision=-1, applied_index=42, raft_term=3, cluster_id=1,
        member_id=2, member_name="n1", server_version="3.4.23",
    )


def test_backup_round_trip_and_etcd_digest_convention() -> None:
    state = b"state bytes" * 100
    data = backup.encode(_meta(), state)
    assert len(data) % 512 == 32  # etcdctl's "sha256 checksum found" test
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    decoded = backup.decode(data)
    assert decoded.meta == _meta() and decoded.state == state and decoded.size == len(data)


def test_damaged_backups_are_refused() -> None:
    data = bytearray(backup.encode(_meta(), b"x" * 1000))
    data[100] ^= 0xFF
    with pytest.raises(backup.BackupError, match="expected sha256"):
        backup.decode(bytes(data))
    with pytest.raises(backup.BackupError, match="missing hash"):
        backup.decode(bytes(data[:-1]))
    with pytest.raises(backup.BackupError, match="bad magic"):
        backup.decode(b"\0" * 512, skip_hash_check=True)


# -- etcdctl-style printing ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (9, "9 B"), (999, "999 B"), (1000, "1.0 kB"), (20480, "20 kB"), (24576, "25 kB"),
     (102400, "102 kB"), (1500000, "1.5 MB"), (2147483648, "2.1 GB")],
)
def test_sizes_print_like_go_humanize(n: int, text: str) -> None:
    assert humanize_bytes(n) == text


def test_tables_look_like_etcdctls() -> None:
    assert render_table(["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], [["e2b2cc50", "0", "5", "20 kB"]]) == (
        "+----------+----------+------------+------------+\n"
        "|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n"
        "+----------+----------+------------+------------+\n"
        "| e2b2cc50 |        0 |          5 |      20 kB |\n"
        "+----------+----------+------------+------------+"
    )
