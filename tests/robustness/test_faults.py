"""The fault machinery itself: WAL tail damage is recoverable, failpoints parse and fire, the proxy cuts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from consensus.raft.types import Entry, HardState
from consensus.server import failpoints
from consensus.storage.wal import WAL, WALCorruptError
from tests.robustness.faults import CORRUPTION_MODES, corrupt_tail, newest_segment, wal_records


def write_wal(directory: Path, entries: int = 40) -> None:
    wal = WAL.create(directory / "wal", b"meta", segment_bytes=1 << 20)
    for i in range(1, entries + 1):
        wal.save(HardState(term=1, vote=1, commit=i - 1), [Entry(1, i, data=b"entry-%d" % i)])
        wal.sync()
    wal.close()


@pytest.mark.parametrize("mode", CORRUPTION_MODES)
def test_every_corruption_mode_leaves_a_recoverable_torn_tail(tmp_path: Path, mode: str) -> None:
    write_wal(tmp_path)
    segment = newest_segment(tmp_path)
    before = wal_records(segment.read_bytes())
    note = corrupt_tail(segment, mode, nbytes=13)
    assert "written at" in note
    wal, recovered = WAL.open(tmp_path / "wal", segment_bytes=1 << 20)
    wal.close()
    assert recovered.torn_tail is not None, f"{mode}: the damage was not seen"
    assert [e.index for e in recovered.entries] == list(range(1, 41)), "an acknowledged entry was lost"
    assert recovered.hard_state == HardState(term=1, vote=1, commit=39)
    assert wal_records(segment.read_bytes()) == before


def test_losing_an_acknowledged_record_is_a_separate_explicit_mode(tmp_path: Path) -> None:
    write_wal(tmp_path)
    note = corrupt_tail(newest_segment(tmp_path), "truncate-acked", nbytes=5)
    assert "inside its last entries record" in note
    try:
        wal, recovered = WAL.open(tmp_path / "wal", segment_bytes=1 << 20)
    except WALCorruptError:
        return
    wal.close()
    assert [e.index for e in recovered.entries] == list(range(1, 40))  # entry 40 was durable, now gone


def test_failpoint_specs_parse() -> None:
    armed = failpoints.parse("before-wal-fsync:crash@3, after-apply=sleep(5)%0.5 ,before-compact:panic")
    assert armed["before-wal-fsync"].action == "crash" and armed["before-wal-fsync"].nth == 3
    assert armed["after-apply"].action == "sleep" and armed["after-apply"].sleep_ms == 5
    assert armed["after-apply"].probability == 0.5
    assert armed["before-compact"].action == "panic"
    for bad in ("nowhere:crash", "after-apply:explode", "after-apply:crash@x"):
        with pytest.raises(ValueError):
            failpoints.parse(bad)


def test_failpoints_are_inert_by_default_and_fire_on_the_nth_hit() -> None:
    code = (
        "from consensus.server import failpoints as f\n"
        "assert f.ACTIVE\n"
        "f.hit('before-apply'); f.hit('before-apply')\n"
        "print('survived two', flush=True)\n"
        "f.hit('before-apply')\n"
        "print('not reached', flush=True)\n"
    )
    env = {**os.environ, "FLAGSTAFF_FAILPOINTS": "before-apply:crash@3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == -9, (out.returncode, out.stderr)
    assert "survived two" in out.stdout and "not reached" not in out.stdout
    assert "failpoint before-apply: crash (hit 3)" in out.stderr
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLAGSTAFF_")}
    out = subprocess.run(
        [sys.executable, "-c", "from consensus.server import failpoints as f; assert not f.ACTIVE; "
                               "assert not f.STALE_FOLLOWER_READS; f.hit('before-apply'); print('ok')"],
        env=clean, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_an_unknown_test_bug_is_refused_at_start() -> None:
    env = {**os.environ, "FLAGSTAFF_TEST_BUG": "no-such-bug"}
    out = subprocess.run([sys.executable, "-c", "import consensus.server.failpoints"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "unknown FLAGSTAFF_TEST_BUG" in out.stderr


async def _proxy_round(rules: list[dict[str, Any]], frames: int = 200) -> tuple[list[bytes], dict[str, int]]:
    """Send ``frames`` message frames from member 0xa to member 0xb through the proxy; what arrived."""
    import asyncio
    import struct

    from tests.cluster.harness import free_port
    from tests.robustness.proxy import ProxyServer, Rule

    received: list[bytes] = []
    done = asyncio.Event()

    async def member_b(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(30)  # the handshake
        writer.write(struct.pack("<BQQ", 0, 1, 0xB))
        try:
            while True:
                (n,) = struct.unpack("<I", await reader.readexactly(4))
                received.append(await reader.readexactly(n))
        except asyncio.IncompleteReadError:
            done.set()

    target = free_port()
    server = await asyncio.start_server(member_b, "127.0.0.1", target)
    proxy = ProxyServer(seed=7)
    listen = free_port()
    await proxy.add_route(listen, target)
    proxy.set_rules([Rule(str(r.get("from", "*")), str(r.get("to", "*")), str(r.get("action", "pass")),
                          float(r.get("delay_ms", 0)), 0.0, float(r.get("loss", 0))) for r in rules])
    _reader, writer = await asyncio.open_connection("127.0.0.1", listen)
    writer.write(struct.pack("<4sBBQQQ", b"FSPR", 1, 1, 1, 0xA, 0xB))
    for i in range(frames):
        payload = b"frame-%05d" % i + b"x" * (i % 50)
        writer.write(struct.pack("<I", len(payload)) + payload)
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await asyncio.wait_for(done.wait(), 10)
    server.close()
    for s in proxy.servers:
        s.close()
    return received, proxy.stats


async def test_the_proxy_drops_whole_frames_only() -> None:
    received, stats = await _proxy_round([{"from": "a", "to": "b", "loss": 0.3}])
    assert 0 < stats["frames_dropped"] < 200
    assert len(received) == 200 - stats["frames_dropped"]
    numbers = [int(f[6:11]) for f in received]
    assert numbers == sorted(numbers)  # in order, each intact
    assert all(f == b"frame-%05d" % n + b"x" * (n % 50) for f, n in zip(received, numbers, strict=True))


async def test_the_proxy_passes_other_edges_and_delays_in_order() -> None:
    received, stats = await _proxy_round([{"from": "b", "to": "a", "action": "blackhole"},
                                          {"from": "*", "to": "*", "delay_ms": 20}])
    assert len(received) == 200 and stats["frames_dropped"] == 0
