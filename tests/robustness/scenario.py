"""One robustness run: cluster, traffic, fault schedule, heal, final observations, verdict.

:func:`run_scenario` is what the CI tests and the sweep call. A run is fully
described by its :class:`Scenario` (seed, cluster size and flags, fault
schedule, traffic settings), which goes into the history's metadata. The
steps:

1. start the cluster (behind the peer proxy for Flagstaff) and wait until it serves;
2. start the traffic (long-lived watchers first, from revision 1);
3. run the fault schedule; each fault must be followed by the cluster
   serving again within ``recovery_timeout``;
4. stop the traffic, heal everything (proxy rules off, paused members
   continued, dead members restarted), wait until it serves;
5. wait out the TTL of the leases that were not kept alive, record the final
   state and every lease's TTL, let the long-lived watchers reach the final
   revision, compare HashKV of every member at that revision;
6. judge the history (:mod:`.judge`); on failure save it as JSON under
   ``var/robustness/`` and put the path in the report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from consensus.client import Client, EtcdError
from tests.cluster.harness import ROOT, ProcessRegistry
from tests.robustness.cluster import EtcdTarget, FlagstaffCluster, Mounts, Target, start_proxy
from tests.robustness.faults import FLAGSTAFF_ONLY, FaultContext, FaultSpec, run_schedule
from tests.robustness.history import History
from tests.robustness.judge import Verdict, judge
from tests.robustness.traffic import Traffic, TrafficConfig

log = logging.getLogger(__name__)

VAR_DIR = ROOT / "var" / "robustness"

DEFAULT_MEMBER_ARGS = [
    "--snapshot-count", "300",
    "--experimental-snapshot-catchup-entries", "100",
    "--experimental-watch-progress-notify-interval", "2s",
]
"""Frequent snapshots (and snapshot catch-up for lagging members) and progress notifications."""


@dataclass
class Scenario:
    """Everything that describes a run (plain data; saved in the history's metadata)."""

    name: str
    seed: int
    target: str = "flagstaff"
    size: int = 3
    duration: float = 15.0
    schedule: list[FaultSpec] = field(default_factory=list)
    traffic: dict[str, Any] = field(default_factory=dict)
    member_args: list[str] = field(default_factory=lambda: list(DEFAULT_MEMBER_ARGS))
    member_env: dict[str, dict[str, str]] = field(default_factory=dict)
    tmpfs_mb: dict[str, int] = field(default_factory=dict)
    recovery_timeout: float = 30.0
    save_always: bool = False

    def to_json(self) -> dict[str, Any]:
        """The scenario as plain JSON data."""
        data = asdict(self)
        data["schedule"] = [s.to_json() for s in self.schedule]
        return data


@dataclass
class RunResult:
    """A finished run: its history, the verdict, and where the history was saved (if it was)."""

    scenario: Scenario
    history: History
    verdict: Verdict
    seconds: float
    saved: Path | None = None

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return self.verdict.ok

    def report(self) -> str:
        """The full failure report."""
        return self.verdict.report(self.history)

    def summary(self) -> str:
        """One line: scenario, seed, verdict, operations, watch events, faults."""
        s = self.verdict.stats
        state = "ok" if self.ok else "FAILED"
        return (
            f"{self.scenario.name} seed={self.scenario.seed} {self.scenario.target}x{self.scenario.size}: "
            f"{state} in {self.seconds:.0f}s; {s.get('operations')} ops ({s.get('ok')} ok, {s.get('failed')} "
            f"failed, {s.get('unknown')} unknown -> {s.get('unknown_after_watch')}), "
            f"{s.get('watch_events')} watch events, {s.get('faults')} faults"
        )


def build_target(sc: Scenario, workdir: Path, registry: ProcessRegistry, mounts: Mounts) -> Target:
    """The cluster a scenario runs on (Flagstaff behind a new proxy, or etcd)."""
    if sc.target == "etcd":
        unsupported = [f.fault for f in sc.schedule if f.fault in FLAGSTAFF_ONLY]
        if unsupported:
            raise ValueError(f"faults {unsupported} need a Flagstaff cluster")
        return EtcdTarget(workdir / "etcd", sc.size, ["--experimental-watch-progress-notify-interval", "2s"])
    proxy = start_proxy(registry, workdir / "proxy.log", seed=sc.seed)
    return FlagstaffCluster(
        workdir / "members", registry, sc.size, proxy, extra_args=sc.member_args,
        env=sc.member_env, mounts=mounts, tmpfs_mb=sc.tmpfs_mb,
    )


async def run_scenario(sc: Scenario, workdir: Path, registry: ProcessRegistry, mounts: Mounts) -> RunResult:
    """Run ``sc`` end to end (see the module docstring); never raises for a violation, only reports it."""
    started = time.monotonic()
    history = History(meta={
        "scenario": sc.name, "seed": sc.seed, "target": sc.target, "size": sc.size,
        "schedule": [s.to_json() for s in sc.schedule], "scenario_config": sc.to_json(),
    })
    problems: list[str] = []
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = build_target(sc, workdir, registry, mounts)
    await asyncio.to_thread(cluster.start)
    await asyncio.to_thread(cluster.wait_serving, 90)
    t0 = time.monotonic()
    history.meta["t0_wall"] = time.time()
    traffic = Traffic(TrafficConfig(seed=sc.seed, **sc.traffic), cluster.endpoints(), history, t0)
    ctx = FaultContext(cluster, t0, sc.recovery_timeout, history.faults, workdir)
    try:
        await traffic.start()
        faults = asyncio.create_task(run_schedule(sc.schedule, ctx))
        await asyncio.sleep(sc.duration)
        problems += await faults
        await traffic.stop()
        problems += await _heal(cluster, ctx)
        endpoints = [m.endpoint for m in cluster.members if m.running]
        async with Client(endpoints, timeout=10) as admin:
            await _wait_expiring_leases(history, admin, t0)
            await traffic.final_observations(admin)
            final_revision = int(history.final.get("revision", 0))
            history.meta["final_revision"] = final_revision
            problems += await traffic.finish(final_revision, timeout=30)
            problems += await _compare_hashes(cluster, admin, final_revision, history)
    except Exception as exc:
        log.exception("scenario %s failed to run", sc.name)
        problems.append(f"the run itself failed: {exc!r}\n{cluster.dump_logs()}")
        await traffic.stop()
    finally:
        await asyncio.to_thread(cluster.stop_all)
    problems += [f"traffic generator: {e}" for e in traffic.errors]
    history.final["problems"] = problems
    verdict = judge(history)
    result = RunResult(sc, history, verdict, time.monotonic() - started)
    if not verdict.ok or sc.save_always:
        path = VAR_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{sc.name}-seed{sc.seed}.json"
        history.meta["saved_to"] = str(path)
        result.saved = history.save(path)
    return result


async def _heal(cluster: Target, ctx: FaultContext) -> list[str]:
    if cluster.proxy is not None:
        await asyncio.to_thread(cluster.proxy.heal)
    for m in cluster.members:
        if m.name in ctx.removed:
            continue
        if m.paused:
            m.resume()
        if not m.running:
            await asyncio.to_thread(cluster.restart, m)
    try:
        await asyncio.to_thread(cluster.wait_serving, ctx.recovery_timeout)
    except AssertionError as exc:
        return [f"after healing: {exc}"]
    return []


async def _wait_expiring_leases(history: History, admin: Client, t0: float) -> None:
    """Poll until every lease that was not kept alive is gone, TTL -1 (bounded: 3 TTLs + 15 s)."""
    expiring = [lr for lr in history.leases if not lr.keep_alive]
    if not expiring:
        return
    deadline = time.monotonic() + 3 * max(lr.ttl for lr in expiring) + 15
    for lr in expiring:
        while time.monotonic() < deadline:
            try:
                r = await admin.lease_time_to_live(lr.lease_id, timeout=5)
            except EtcdError:
                await asyncio.sleep(0.2)
                continue
            if r.TTL < 0:
                break  # gone (TTL 0 is "expiring now": its keys may still be there)
            await asyncio.sleep(0.2)


async def _compare_hashes(cluster: Target, admin: Client, revision: int, history: History) -> list[str]:
    """HashKV of every live member at ``revision`` (once each has applied it) must be equal."""
    if revision <= 0:
        return ["no final revision: HashKV not compared"]
    hashes: dict[str, tuple[int, int]] = {}
    problems: list[str] = []
    for m in cluster.members:
        if not m.running:
            continue
        deadline = time.monotonic() + 30
        while True:
            try:
                status = await admin.status(endpoint=m.endpoint, timeout=5)
                if status.header.revision >= revision:
                    r = await admin.hash_kv(revision, endpoint=m.endpoint, timeout=10)
                    hashes[m.name] = (r.hash, r.compact_revision)
                    break
            except EtcdError as exc:
                last = repr(exc)
            else:
                last = f"at revision {status.header.revision}"
            if time.monotonic() > deadline:
                problems.append(f"{m.name} did not reach revision {revision} for HashKV: {last}")
                break
            await asyncio.sleep(0.2)
    history.final["hashes"] = {k: list(v) for k, v in hashes.items()}
    if len(set(hashes.values())) > 1:
        problems.append(f"HashKV differs between members at revision {revision}: {hashes}")
    return problems
