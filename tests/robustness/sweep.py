"""The long sweep behind ``make robustness``: many seeds, each with its own random fault schedule.

``python -m tests.robustness.sweep [--runs N | --minutes M] [--seed S] [--duration D]
[--target flagstaff|etcd] [--only-seed S] [--keep-going]``

Every run is :func:`tests.robustness.profiles.sweep_scenario` of its seed
(``S``, ``S+1``, ...), so ``--only-seed`` reproduces one run's setup. Each
run prints one line; every failure prints its full report (seed, fault
schedule, minimal non-linearizable operations, other violations) and the
path of its saved history. The sweep ends with a summary: runs, operations,
faults by kind, failures -- also written to ``var/robustness/summary.json``.
Exit status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.cluster.harness import ProcessRegistry
from tests.robustness.cluster import Mounts, tmpfs_available
from tests.robustness.faults import FLAGSTAFF_ONLY, FaultSpec
from tests.robustness.profiles import sweep_scenario
from tests.robustness.scenario import VAR_DIR, RunResult, run_scenario


def run_one(seed: int, duration: float, target: str, workroot: Path, can_mount: bool) -> RunResult:
    """Run the sweep scenario of ``seed`` on a fresh cluster, cleaning everything up after."""
    scenario = sweep_scenario(seed, duration)
    scenario.target = target
    if target == "etcd":
        scenario.traffic["request_progress"] = False  # etcd-io/etcd#15220 in etcd 3.4.23 (see profiles.ci_etcd)
        # What etcd cannot get (no peer proxy, no failpoints) becomes a kill or a pause of the same target.
        scenario.schedule = [
            f if f.fault not in FLAGSTAFF_ONLY | {"replace", "combo"}
            else FaultSpec("kill" if i % 2 else "pause", f.at, "follower" if f.target not in ("leader", "all") else f.target,
                           min(f.hold, 3.0))
            for i, f in enumerate(scenario.schedule)
        ]
        scenario.size = 3
        scenario.tmpfs_mb = {}
        scenario.name = "sweep-etcd-3m"
    if not can_mount:
        scenario.schedule = [f for f in scenario.schedule if f.fault != "disk_full"]
        scenario.tmpfs_mb = {}
    registry = ProcessRegistry()
    mounts = Mounts()
    workdir = workroot / f"seed{seed}"
    try:
        return asyncio.run(run_scenario(scenario, workdir, registry, mounts))
    finally:
        registry.kill_all()
        mounts.unmount_all()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Command line: the sweep (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Long robustness sweep over many seeds and fault schedules.")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=0.0, help="run until this much time passed instead")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--only-seed", type=int, default=None, help="run exactly this seed once")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of traffic per run")
    parser.add_argument("--target", choices=("flagstaff", "etcd"), default="flagstaff")
    parser.add_argument("--stop-on-failure", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    can_mount = tmpfs_available()
    if not can_mount:
        print("note: cannot mount a tmpfs here (needs root); the full-disk fault is skipped")
    seeds = [args.only_seed] if args.only_seed is not None else None
    started = time.monotonic()
    totals: dict[str, Any] = collections.Counter()
    faults: collections.Counter[str] = collections.Counter()
    failures: list[dict[str, Any]] = []
    workroot = Path(tempfile.mkdtemp(prefix="flagstaff-robustness-"))
    i = 0
    try:
        while True:
            if seeds is not None:
                if i >= len(seeds):
                    break
                seed = seeds[i]
            else:
                if args.minutes and time.monotonic() - started > args.minutes * 60:
                    break
                if not args.minutes and i >= args.runs:
                    break
                seed = args.seed + i
            i += 1
            result = run_one(seed, args.duration, args.target, workroot, can_mount)
            print(result.summary(), flush=True)
            print("  schedule: " + ", ".join(f.describe() for f in result.scenario.schedule), flush=True)
            for f in result.history.faults:
                print(f"  {f['fault']} on {','.join(f.get('members', []))}: recovered in "
                      f"{f.get('recovery_s') or 0:.1f}s {f.get('notes') or ''}", flush=True)
            totals["runs"] += 1
            for key in ("operations", "ok", "failed", "unknown", "watch_events", "checked_reads", "checked_writes"):
                totals[key] += int(result.verdict.stats.get(key, 0) or 0)
            for f in result.history.faults:
                faults[f["fault"]] += 1
            if not result.ok:
                print(result.report(), flush=True)
                failures.append({"seed": seed, "saved": str(result.saved), "sections": list(result.verdict.sections)})
                if args.stop_on_failure:
                    break
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    summary = {
        "target": args.target,
        "runs": totals["runs"],
        "operations": totals["operations"],
        "operations_ok": totals["ok"],
        "operations_failed": totals["failed"],
        "operations_unknown": totals["unknown"],
        "watch_events": totals["watch_events"],
        "reads_checked_against_revisions": totals["checked_reads"],
        "writes_checked_against_watch": totals["checked_writes"],
        "faults": sum(faults.values()),
        "faults_by_kind": dict(sorted(faults.items())),
        "failures": failures,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    (VAR_DIR / "summary.json").write_text(json.dumps(summary, indent=2))
    print("=" * 72)
    print(f"robustness sweep ({args.target}): {summary['runs']} runs in {summary['minutes']} min, "
          f"{summary['operations']} operations ({summary['operations_unknown']} with unknown outcome), "
          f"{summary['faults']} faults {summary['faults_by_kind']}, {len(failures)} failed run(s)")
    for f in failures:
        print(f"  FAILED seed {f['seed']}: {', '.join(f['sections'])}; history {f['saved']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
