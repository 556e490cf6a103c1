"""Faults injected into a running cluster, and the schedule that orders them.

A :class:`FaultSpec` is plain data (JSON in reports and saved histories):
which fault, when (seconds after the traffic started), on which member
(``leader``, ``follower``, ``all`` or a name), for how long, and its
parameters. :func:`inject` performs one: it breaks something, holds it,
repairs it, and then requires the cluster to *serve again* (every live
member answers a linearizable read) within the recovery bound, recording the
recovery time.

Faults (``FAULTS``):

* ``kill`` — SIGKILL the target (``all``: a full-cluster crash), restart it;
* ``pause`` — SIGSTOP, hold, SIGCONT;
* ``partition`` — the target's peer traffic blackholed both ways by the proxy
  (clients keep talking to it); ``one_way`` blackholes only its outbound;
* ``latency`` / ``loss`` — added delay (``delay_ms``, ``jitter_ms``) or frame
  loss (``loss``) on every peer edge (or the target's);
* ``replace`` — remove a follower through the Cluster API, wipe it, add a
  fresh member with an empty data dir, wait until it serves;
* ``corrupt_wal`` — SIGKILL a follower, leave a torn write after the last
  record of its newest WAL segment (``mode``: ``torn``, ``garbage``,
  ``flip``; see :func:`corrupt_tail`), restart: recovery must cut the torn
  tail and the member must catch up;
* ``failpoint`` — restart the target with ``FLAGSTAFF_FAILPOINTS=<site>:crash@N``,
  wait for it to crash there, restart it clean (``site``, ``nth``);
* ``disk_full`` — fill the target's tmpfs data dir (the scenario mounts it)
  to ENOSPC, hold (and up to ``wait_enospc`` more seconds until the member
  hits it), free the space, restart the member if it died;
* ``combo`` — several of the above at once (``params["faults"]``: their
  specs), e.g. peer latency while the leader is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from consensus.client import Client, EtcdError
from tests.robustness.cluster import FlagstaffCluster, Member, Target

FAULTS = (
    "kill", "pause", "partition", "latency", "loss", "replace", "corrupt_wal", "failpoint", "disk_full", "combo",
)
PROXY_FAULTS = frozenset({"partition", "latency", "loss"})
FLAGSTAFF_ONLY = frozenset({"partition", "latency", "loss", "corrupt_wal", "failpoint", "disk_full"})


@dataclass
class FaultSpec:
    """One scheduled fault (plain data)."""

    fault: str
    at: float = 2.0
    target: str = "follower"
    hold: float = 2.0
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The spec as plain JSON data."""
        return asdict(self)

    def describe(self) -> str:
        """A one-line summary for reports."""
        extra = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.fault}({self.target}, at {self.at:g}s, hold {self.hold:g}s{', ' + extra if extra else ''})"


@dataclass
class FaultContext:
    """What faults act on: the cluster, the history clock, the recovery bound and an admin client."""

    cluster: Target
    t0: float
    recovery_timeout: float
    log: list[dict[str, Any]]
    workdir: Path
    removed: set[str] = field(default_factory=set)
    replacements: int = 0

    def now(self) -> float:
        """Seconds since the traffic started (the history's clock)."""
        return time.monotonic() - self.t0


async def _leader(ctx: FaultContext) -> Member:
    return await asyncio.to_thread(ctx.cluster.leader, ctx.recovery_timeout)


async def pick(ctx: FaultContext, target: str) -> list[Member]:
    """The members a target names, among members that are in the cluster."""
    present = [m for m in ctx.cluster.members if m.name not in ctx.removed]
    if target == "all":
        return present
    if target in ("leader", "follower"):
        lead = await _leader(ctx)
        if target == "leader":
            return [lead]
        followers = [m for m in present if m is not lead and m.running]
        return followers[:1]
    return [m for m in present if m.name == target]


async def inject(spec: FaultSpec, ctx: FaultContext) -> dict[str, Any]:
    """Perform one fault end to end; the record of what happened (also appended to ``ctx.log``)."""
    entry: dict[str, Any] = {**spec.to_json(), "injected_at": ctx.now()}
    ctx.log.append(entry)
    handler = globals().get(f"_fault_{spec.fault}")
    if handler is None:
        raise ValueError(f"unknown fault {spec.fault!r}")
    notes = await handler(spec, ctx, entry)
    if notes:
        entry["notes"] = notes
    entry["healed_at"] = ctx.now()
    entry["recovery_s"] = await asyncio.to_thread(ctx.cluster.wait_serving, ctx.recovery_timeout)
    entry["recovered_at"] = ctx.now()
    return entry


async def _hold(spec: FaultSpec) -> None:
    await asyncio.sleep(spec.hold)


def _names(members: list[Member]) -> list[str]:
    return [m.name for m in members]


async def _fault_kill(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    victims = await pick(ctx, spec.target)
    entry["members"] = _names(victims)
    for m in victims:
        m.kill9()
    await _hold(spec)
    for m in victims:
        await asyncio.to_thread(ctx.cluster.restart, m)
    return ""


async def _fault_pause(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    victims = await pick(ctx, spec.target)
    entry["members"] = _names(victims)
    for m in victims:
        m.pause()
    try:
        await _hold(spec)
    finally:
        for m in victims:
            m.resume()
    return ""


def _proxy(ctx: FaultContext) -> Any:
    if ctx.cluster.proxy is None:
        raise ValueError("this fault needs the peer proxy (Flagstaff clusters only)")
    return ctx.cluster.proxy


async def _fault_partition(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    proxy = _proxy(ctx)
    victims = await pick(ctx, spec.target)
    entry["members"] = _names(victims)
    others = [m for m in ctx.cluster.members if m not in victims and m.member_id]
    rules: list[dict[str, Any]] = []
    for v in victims:
        for o in others:
            rules.append({"from": v.hex_id, "to": o.hex_id, "action": "blackhole"})
            if not spec.params.get("one_way"):
                rules.append({"from": o.hex_id, "to": v.hex_id, "action": "blackhole"})
    await asyncio.to_thread(proxy.set_rules, rules)
    try:
        await _hold(spec)
    finally:
        await asyncio.to_thread(proxy.heal)
    return ""


async def _degrade(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any], rule: dict[str, Any]) -> str:
    proxy = _proxy(ctx)
    if spec.target == "all":
        rules = [{"from": "*", "to": "*", **rule}]
        entry["members"] = ["all"]
    else:
        victims = await pick(ctx, spec.target)
        entry["members"] = _names(victims)
        rules = []
        for v in victims:
            rules += [{"from": v.hex_id, "to": "*", **rule}, {"from": "*", "to": v.hex_id, **rule}]
    await asyncio.to_thread(proxy.set_rules, rules)
    try:
        await _hold(spec)
    finally:
        stats = await asyncio.to_thread(proxy.stats)
        await asyncio.to_thread(proxy.heal)
    return f"proxy stats {stats.get('stats')}"


async def _fault_latency(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    rule = {"delay_ms": spec.params.get("delay_ms", 100), "jitter_ms": spec.params.get("jitter_ms", 50)}
    return await _degrade(spec, ctx, entry, rule)


async def _fault_loss(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    return await _degrade(spec, ctx, entry, {"loss": spec.params.get("loss", 0.2)})


async def _fault_replace(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    cluster = ctx.cluster
    if not isinstance(cluster, FlagstaffCluster):
        raise ValueError("replace needs a Flagstaff cluster")
    (victim,) = await pick(ctx, "follower" if spec.target in ("leader", "all") else spec.target)
    entry["members"] = [victim.name]
    live = [m.endpoint for m in cluster.members if m.name not in ctx.removed and m is not victim]
    async with Client(live, timeout=10) as admin:
        await admin.member_remove(victim.member_id)
        ctx.removed.add(victim.name)
        # A removed member stops by itself; make sure, then wipe it.
        deadline = time.monotonic() + ctx.recovery_timeout
        while victim.running and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        victim.kill9()
        shutil.rmtree(victim.data_dir, ignore_errors=True)
        await _hold(spec)
        ctx.replacements += 1
        fresh = await asyncio.to_thread(cluster.add_member_spec, f"r{ctx.replacements}{victim.name}")
        await admin.member_add([fresh.advertised_peer_url])
    present = [m for m in cluster.members if m.name not in ctx.removed]
    await asyncio.to_thread(cluster.spawn, fresh, cluster.initial_cluster(present), "existing")
    await asyncio.to_thread(cluster.learn_ids, ctx.recovery_timeout)
    entry["added"] = fresh.name
    return f"replaced {victim.name} by {fresh.name}"


def newest_segment(data_dir: Path) -> Path:
    """The newest WAL segment of a member's data dir."""
    segments = sorted((data_dir / "wal").glob("*.wal"))
    if not segments:
        raise FileNotFoundError(f"no WAL segment under {data_dir}")
    return segments[-1]


def wal_records(data: bytes) -> list[tuple[int, int]]:
    """``(offset, size)`` of each structurally sound record of a segment (``length | crc | type | payload``)."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos + 9 <= len(data):
        length, _crc, kind = struct.unpack_from("<IIB", data, pos)
        if kind not in (1, 2, 3, 4, 5) or pos + 9 + length > len(data):
            break
        out.append((pos, 9 + length))
        pos += 9 + length
    return out


CORRUPTION_MODES = ("torn", "garbage", "flip")
"""Damage to bytes that were never acknowledged: what a crash in the middle of a write leaves."""


def corrupt_tail(path: Path, mode: str, nbytes: int = 7) -> str:
    """Damage the tail of a WAL segment after its last record (modes: :data:`CORRUPTION_MODES`).

    ``torn`` writes the first half of a copy of the last record after it (a
    record whose write was cut short), ``garbage`` writes junk, ``flip``
    writes a full copy with one byte flipped (a CRC mismatch). Every mode
    leaves the records already there intact: those may have been
    acknowledged, and a disk that loses acknowledged writes is outside the
    fault model (``truncate-acked`` does exactly that, on request only:
    etcd panics on the resulting log, "Was the raft log corrupted, truncated,
    or lost?").
    """
    data = path.read_bytes()
    records = wal_records(data)
    if len(records) < 5:
        return f"{path.name}: only {len(records)} records, left alone"
    last_at, last_size = records[-1]
    end = last_at + last_size
    last = data[last_at:end]
    if mode == "truncate-acked":
        # Cut inside the last ENTRIES record (type 4): entries the member had made durable are lost.
        entries_at, entries_size = next(r for r in reversed(records) if data[r[0] + 8] == 4)
        cut = entries_at + entries_size - min(nbytes, entries_size - 1)
        with open(path, "r+b") as f:
            f.truncate(cut)
        return f"{path.name}: cut at {cut}, inside its last entries record [{entries_at}, {entries_at + entries_size})"
    if mode == "torn":
        junk = last[: max(10, last_size // 2)]
    elif mode == "garbage":
        junk = os.urandom(nbytes) + b"\xff" * nbytes
    elif mode == "flip":
        flipped = bytearray(last)
        flipped[min(len(flipped) - 1, 9 + nbytes % max(1, last_size - 9))] ^= 0xFF
        junk = bytes(flipped)
    else:
        raise ValueError(f"unknown corruption mode {mode!r}")
    with open(path, "r+b") as f:
        f.seek(end)
        f.write(junk)
    return f"{path.name}: {mode} tail of {len(junk)} bytes written at {end} (after {len(records)} records)"


async def _fault_corrupt_wal(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    victims = await pick(ctx, spec.target)
    entry["members"] = _names(victims)
    notes = []
    for m in victims:
        m.kill9()
        notes.append(corrupt_tail(newest_segment(m.data_dir), spec.params.get("mode", "torn"),
                                  int(spec.params.get("bytes", 7))))
    await _hold(spec)
    for m in victims:
        await asyncio.to_thread(ctx.cluster.restart, m)
    return "; ".join(notes)


async def _fault_failpoint(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    site = spec.params.get("site", "after-apply")
    nth = int(spec.params.get("nth", 10))
    victims = await pick(ctx, spec.target)
    entry["members"] = _names(victims)
    notes = []
    for m in victims:
        m.kill9()
        await asyncio.sleep(spec.params.get("down", 0.5))
        armed = {**m.env, "FLAGSTAFF_FAILPOINTS": f"{site}:crash@{nth}"}
        await asyncio.to_thread(ctx.cluster.restart, m, armed)
        deadline = time.monotonic() + spec.hold
        while m.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        crashed = not m.running
        notes.append(f"{m.name} {'crashed' if crashed else 'did not reach'} {site} #{nth}")
        m.kill9()
        await asyncio.to_thread(ctx.cluster.restart, m)
    entry["crashed"] = all("crashed" in n for n in notes)
    return "; ".join(notes)


async def _fault_disk_full(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    victims = await pick(ctx, spec.target)
    entry["members"] = _names(victims)
    notes = []
    for m in victims:
        filler = m.data_dir / "filler"
        log_start = m.log_path.stat().st_size if m.log_path.exists() else 0

        def log_since(path: Path = m.log_path, start: int = log_start) -> str:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")

        written = await asyncio.to_thread(_fill, filler)
        await _hold(spec)
        # Optionally hold on until the member ran into the full disk (it writes snapshots only now and then).
        deadline = time.monotonic() + float(spec.params.get("wait_enospc", 0))
        while time.monotonic() < deadline and "No space left" not in log_since():
            await asyncio.sleep(0.2)
        enospc = "No space left on device" in log_since()
        exit_by = time.monotonic() + (5 if enospc else 0)
        while m.running and time.monotonic() < exit_by:  # a member that hit ENOSPC may be stopping
            await asyncio.sleep(0.1)
        died = not m.running
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
        notes.append(f"{m.name}: filled {written >> 20} MiB; {'died' if died else 'stayed up'}; "
                     f"ENOSPC {'seen' if enospc else 'not seen'} in its log")
        entry["enospc_seen"] = enospc
        if died:
            await asyncio.to_thread(ctx.cluster.restart, m)
    return "; ".join(notes)


async def _fault_combo(spec: FaultSpec, ctx: FaultContext, entry: dict[str, Any]) -> str:
    parts = [FaultSpec(**p) if isinstance(p, dict) else p for p in spec.params.get("faults", [])]
    records: list[dict[str, Any]] = [{**p.to_json()} for p in parts]
    entry["parts"] = records

    async def one(part: FaultSpec, record: dict[str, Any]) -> str:
        await asyncio.sleep(max(0.0, part.at))  # the offset inside the combo
        handler = globals()[f"_fault_{part.fault}"]
        note: str = await handler(part, ctx, record)
        return note

    notes = await asyncio.gather(*(one(p, r) for p, r in zip(parts, records, strict=True)))
    entry["members"] = sorted({m for r in records for m in r.get("members", [])})
    return "; ".join(n for n in notes if n)


def _fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system is full; the bytes written."""
    written = 0
    block = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(block)
            except OSError:
                break
        with contextlib.suppress(OSError):
            while True:
                written += f.write(b"\0" * 4096)
    return written


async def run_schedule(schedule: list[FaultSpec], ctx: FaultContext) -> list[str]:
    """Inject the faults in order, each at its time (or right after the previous one); problems found."""
    problems: list[str] = []
    for spec in schedule:
        delay = spec.at - ctx.now()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await inject(spec, ctx)
        except AssertionError as exc:  # did not serve again in time
            problems.append(f"after {spec.describe()}: {exc}")
            break
        except (EtcdError, OSError, ValueError) as exc:
            problems.append(f"could not inject {spec.describe()}: {exc!r}")
    return problems
