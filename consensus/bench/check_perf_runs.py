"""``etcdctl check perf`` against fresh 3-member Flagstaff and etcd clusters, alternating.

``python -m consensus.bench.check_perf_runs [--load m] [--rounds 2] [--prefill N]``

Each round starts a new Flagstaff cluster, runs the check, stops it, then does
the same with the real etcd, so both see the machine in the same state.
``--prefill N`` first writes N puts (1 KiB values, 100,000 distinct 64-byte
keys, 200 clients) so the check runs against a large store: with the default
``--snapshot-count`` (100,000) a snapshot is taken during the prefill or the
check. Prints one JSON line per run: the check's PASS/FAIL lines, the load
average at the start and each member's CPU seconds during the check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from consensus.bench.clusters import LocalCluster, process_cpu_seconds, start_etcd, start_flagstaff
from consensus.bench.compare import check_perf, run_bench

Starter = Callable[..., LocalCluster]


def prefill(cluster: LocalCluster, writes: int) -> None:
    """``writes`` puts of 1 KiB values over 100,000 keys of 64 bytes."""
    run_bench(cluster, ("put", "--total", str(writes), "--clients", "200", "--conns", "10",
                        "--val-size", "1024", "--key-size", "64", "--key-space-size", "100000"), None)


def one_run(name: str, start: Starter, base: Path, load: str, writes: int) -> dict[str, object]:
    """Start a cluster, prefill it, run the check; the result as a JSON-ready dict."""
    cluster = start(base)
    try:
        if writes:
            prefill(cluster, writes)
        before = {m.name: process_cpu_seconds(m.pid) for m in cluster.members}
        started, load_average = time.strftime("%H:%M:%S"), os.getloadavg()[0]
        outcome = check_perf(cluster, load)
        cpu = {m.name: round(process_cpu_seconds(m.pid) - before[m.name], 1) for m in cluster.members}
    finally:
        cluster.stop()
    return {"system": name, "load": load, "prefill_writes": writes, "start": started,
            "load_average_start": round(load_average, 2), "verdict": outcome["verdict"],
            "lines": outcome["lines"], "member_cpu_s": cpu}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--load", default="m", choices=("s", "m", "l", "xl"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prefill", type=int, default=0, help="puts written before the check")
    parser.add_argument("--dir", default="", help="data directory (default: a temp dir under var/bench)")
    args = parser.parse_args(argv)
    Path("var/bench").mkdir(parents=True, exist_ok=True)
    base = Path(args.dir or tempfile.mkdtemp(prefix="check-perf-", dir="var/bench"))
    systems: tuple[tuple[str, Starter], ...] = (("flagstaff", start_flagstaff), ("etcd", start_etcd))
    failed = 0
    for r in range(args.rounds):
        for name, start in systems:
            result = {"round": r + 1, **one_run(name, start, base / f"{name}-{r + 1}", args.load, args.prefill)}
            failed += result["verdict"] != "PASS"
            print(json.dumps(result), flush=True)
    print(f"{failed} of {2 * args.rounds} runs failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
