"""``flagstaff sim``: run the deterministic Raft simulator over many seeds, replay one, or time the core.

Examples::

    flagstaff sim --seeds 1000 --progress            # seeds 0..999, 3 and 5 members alternating
    flagstaff sim --seed 1234 --trace                # replay one seed and print its trace
    flagstaff sim --seeds 300 --members 3 --broken commit-previous-term   # must fail
    flagstaff sim --throughput                       # one line of JSON: entries per CPU-second

Exit status: 0 when every seed passes, 1 when any violates an invariant (the
failing seeds are printed, with the last lines of each trace; the full trace
goes to a file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from consensus.sim.cluster import BROKEN_MODES
from consensus.sim.runner import SeedOutcome, SweepConfig, SweepSummary, replay, sweep
from consensus.sim.throughput import measure

TRACE_TAIL = 200
"""How many trailing trace lines a failure prints."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=100, metavar="N", help="how many seeds (default 100)")
    parser.add_argument("--start-seed", type=int, default=0, metavar="S", help="first seed (default 0)")
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="replay this one seed")
    parser.add_argument(
        "--members",
        choices=("3", "5", "both"),
        default="both",
        help="cluster size; 'both' (default) alternates: even seeds 3, odd seeds 5",
    )
    parser.add_argument(
        "--ticks", type=int, default=200, help="ticks of faults and workload per seed (default 200)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="W",
        help="worker processes (default: os.cpu_count())",
    )
    parser.add_argument("--progress", action="store_true", help="report progress on stderr")
    parser.add_argument(
        "--broken",
        choices=BROKEN_MODES,
        default=None,
        help="run a deliberately unsafe core, which the simulator must catch",
    )
    parser.add_argument(
        "--coalesce",
        action="store_true",
        help="send each Ready's messages coalesced, as the real member does (consensus.raft.coalesce)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--trace", action="store_true", help="with --seed: print the whole trace")
    parser.add_argument(
        "--trace-dir",
        type=Path,
        default=Path("var/sim-traces"),
        help="where full traces of failing seeds go (default var/sim-traces)",
    )
    parser.add_argument(
        "--fail-fast", action="store_true", help="stop at the first failing seed"
    )
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="measure the core's committed entries per CPU-second (3 members, no faults)",
    )


def run(args: argparse.Namespace) -> int:
    if args.throughput:
        print(json.dumps(measure().as_dict()))
        return 0
    members = None if args.members == "both" else int(args.members)
    config = SweepConfig(members=members, ticks=args.ticks, broken=args.broken, coalesce=args.coalesce)
    if args.seed is not None:
        return _replay_one(args.seed, config, args)
    return _sweep(config, args)


def _replay_one(seed: int, config: SweepConfig, args: argparse.Namespace) -> int:
    start = time.process_time()
    r = replay(seed, config)
    cpu = time.process_time() - start
    if args.trace:
        for line in r.trace:
            print(line)
    if r.invariant is None:
        print(f"seed {seed} ({r.members} members): ok, {len(r.trace)} trace lines, {cpu:.2f} CPU-s")
        return 0
    path = _write_trace(args.trace_dir, seed, r.members, r.trace)
    if not args.trace:
        _print_failure(seed, r.members, r.invariant, r.detail, r.trace, path)
    else:
        print(f"seed {seed} ({r.members} members): VIOLATION {r.invariant}: {r.detail}")
    return 1


def _sweep(config: SweepConfig, args: argparse.Namespace) -> int:
    seeds = range(args.start_seed, args.start_seed + args.seeds)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    last_report = [time.monotonic()]

    def on_outcome(o: SeedOutcome, s: SweepSummary) -> None:
        if not o.ok:
            print(
                f"sim: seed {o.seed} ({o.members} members) VIOLATION {o.invariant}: {o.detail}",
                file=sys.stderr,
                flush=True,
            )
        if args.progress:
            now = time.monotonic()
            if now - last_report[0] >= 5.0 or s.seeds == args.seeds:
                last_report[0] = now
                rate = s.seeds_per_second
                eta = (args.seeds - s.seeds) / rate if rate > 0 else 0.0
                print(
                    f"sim: {s.seeds}/{args.seeds} seeds, {len(s.failures)} violations, "
                    f"{rate:.1f} seeds/s, {s.committed_per_cpu_second:.0f} committed/CPU-s, "
                    f"eta {eta / 60:.1f} min",
                    file=sys.stderr,
                    flush=True,
                )

    summary = sweep(
        seeds, config, workers=workers, on_outcome=on_outcome, stop_on_failure=args.fail_fast
    )
    traces: dict[int, str] = {}
    nondeterministic: list[int] = []
    for o in summary.failures:
        r = replay(o.seed, config)
        path = _write_trace(args.trace_dir, o.seed, r.members, r.trace)
        traces[o.seed] = str(path)
        if r.invariant != o.invariant or r.detail != o.detail:
            nondeterministic.append(o.seed)
        if not args.json:
            _print_failure(o.seed, o.members, o.invariant, o.detail, r.trace, path)
    if args.json:
        print(json.dumps(_summary_dict(summary, config, args, workers, traces, nondeterministic)))
    else:
        _print_summary(summary, config, args, workers, nondeterministic)
    return 1 if summary.failures or nondeterministic or summary.interrupted else 0


def _write_trace(trace_dir: Path, seed: int, members: int, trace: list[str]) -> Path:
    trace_dir.mkdir(parents=True, exist_ok=True)
    path = trace_dir / f"seed-{seed}-m{members}.trace"
    path.write_text("\n".join(trace) + "\n")
    return path


def _print_failure(
    seed: int,
    members: int,
    invariant: str | None,
    detail: str | None,
    trace: list[str],
    path: Path,
) -> None:
    print(f"=== seed {seed} ({members} members): VIOLATION of {invariant}")
    print(f"    {detail}")
    print(f"--- last {min(TRACE_TAIL, len(trace))} of {len(trace)} trace lines ---")
    for line in trace[-TRACE_TAIL:]:
        print(line)
    print(f"--- full trace: {path}")
    print(f"--- replay: flagstaff sim --seed {seed} --members {members} --trace")


def _summary_dict(
    s: SweepSummary,
    config: SweepConfig,
    args: argparse.Namespace,
    workers: int,
    traces: dict[int, str],
    nondeterministic: list[int],
) -> dict[str, object]:
    return {
        "seeds": s.seeds,
        "start_seed": args.start_seed,
        "members": args.members,
        "ticks": config.ticks,
        "broken": config.broken,
        "coalesce": config.coalesce,
        "workers": workers,
        "passed": s.seeds - len(s.failures),
        "violations": [
            {
                "seed": o.seed,
                "members": o.members,
                "invariant": o.invariant,
                "detail": o.detail,
                "trace": traces.get(o.seed),
            }
            for o in s.failures
        ],
        "nondeterministic_seeds": nondeterministic,
        "interrupted": s.interrupted,
        "wall_seconds": round(s.wall_seconds, 3),
        "cpu_seconds": round(s.cpu_seconds, 3),
        "seeds_per_second": round(s.seeds_per_second, 2),
        "steps": s.steps,
        "committed_entries": s.committed,
        "committed_per_cpu_second": round(s.committed_per_cpu_second, 1),
        "max_recovery_ticks": s.max_recovery_ticks,
    }


def _print_summary(
    s: SweepSummary,
    config: SweepConfig,
    args: argparse.Namespace,
    workers: int,
    nondeterministic: list[int],
) -> None:
    first, last = args.start_seed, args.start_seed + args.seeds - 1
    status = "interrupted, " if s.interrupted else ""
    print(
        f"sim: {status}{s.seeds} seeds ({first}..{last}, members {args.members}, "
        f"{config.ticks} ticks{', broken ' + config.broken if config.broken else ''}"
        f"{', coalesced' if config.coalesce else ''}) "
        f"on {workers} workers: {s.seeds - len(s.failures)} passed, {len(s.failures)} violated"
    )
    if s.failures:
        print("sim: failing seeds: " + " ".join(str(o.seed) for o in s.failures))
    if nondeterministic:
        print(
            "sim: NONDETERMINISTIC (the replay differed): "
            + " ".join(str(seed) for seed in nondeterministic)
        )
    print(
        f"sim: {s.wall_seconds:.1f} s wall, {s.seeds_per_second:.1f} seeds/s, "
        f"{s.committed} entries committed, {s.committed_per_cpu_second:.0f} committed per CPU-second "
        f"({s.cpu_seconds:.1f} CPU-s), max recovery {s.max_recovery_ticks} ticks"
    )
