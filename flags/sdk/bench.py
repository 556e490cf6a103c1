"""``make bench-sdk``: the SDK's three benchmarks, printed as Markdown tables.

1. evaluations per second, single thread, of a boolean flag with a
   percentage rollout and of a 5-rule flag, through the Flagstaff SDK,
   ``launchdarkly-server-sdk`` and ``UnleashClient`` offline in the same run
   (``bench_evaluation``), with Flagstaff's ratio to each;
2. propagation, a save through the REST API to the change callback of 1, 100
   and 1,000 connected SDK clients on this machine, p50 and p99
   (``bench_propagation``; starts a private platform on free ports);
3. memory per client holding 1,000 flags (``bench_memory``, in a fresh process).

``python -m flags.sdk.bench [--only evaluation|propagation|memory] [--n N]
[--clients 1,100,1000] [--redis-url URL] [--json]``. Numbers depend on the machine and its load;
no test asserts on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


def _memory_in_fresh_process() -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", "import json; from flags.sdk.bench_memory import run; "
                               "print(json.dumps(run()))"],
        check=True, capture_output=True, text=True, timeout=600).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _print_evaluation(rates: dict[str, dict[str, float]], n: int) -> None:
    ours = rates["flagstaff"]
    print(f"\n### Evaluations per second (single thread, {n:,} distinct contexts, best of 3, "
          "CPU time)\n")
    print("| SDK | boolean, 25% rollout | ratio | 5-rule flag (falls through) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for sdk, rate in rates.items():
        print(f"| {sdk} | {rate['rollout']:,.0f}/s | "
              f"{ours['rollout'] / rate['rollout']:.1f}x | {rate['5 rules']:,.0f}/s | "
              f"{ours['5 rules'] / rate['5 rules']:.1f}x |")
    print("\n(ratio = Flagstaff's rate / that SDK's rate)")


def _print_propagation(results: dict[int, dict[str, float]], redis_url: str | None) -> None:
    layer = "Redis" if redis_url else "in-memory"
    print(f"\n### Propagation: REST save -> on_change callback ({layer} Channels layer)\n")
    print("| connected SDK clients | samples | p50 | p99 | max |")
    print("|---:|---:|---:|---:|---:|")
    for count, r in results.items():
        print(f"| {count:,} | {r['samples']:.0f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
              f"{r['max_ms']:.1f} ms |")


def _print_memory(result: dict[str, float]) -> None:
    print("\n### Memory per client holding 1,000 flags\n")
    print(f"- Python heap (tracemalloc): {result['heap_bytes_per_client'] / 1e6:.1f} MB per client")
    print(f"- process RSS growth: {result['rss_bytes_per_client'] / 1e6:.1f} MB per client "
          f"({result['clients']:.0f} clients)")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=["evaluation", "propagation", "memory"])
    parser.add_argument("--n", type=int, default=50_000, help="evaluations per case")
    parser.add_argument("--clients", default="1,100,1000",
                        help="connected client counts for the propagation benchmark")
    parser.add_argument("--redis-url", help="Channels layer on Redis (production's) instead of "
                                            "the embedded in-memory layer, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if not args.json:
        print(f"Python {sys.version.split()[0]} on {platform.machine()}, "
              f"{len(__import__('os').sched_getaffinity(0))} CPUs available")
    if args.only in (None, "evaluation"):
        from flags.sdk.bench_evaluation import run as run_evaluation

        results["evaluation"] = run_evaluation(args.n)
        if not args.json:
            _print_evaluation(results["evaluation"], args.n)
    if args.only in (None, "memory"):
        results["memory"] = _memory_in_fresh_process()
        if not args.json:
            _print_memory(results["memory"])
    if args.only in (None, "propagation"):
        from flags.sdk.bench_propagation import run as run_propagation

        counts = tuple(int(c) for c in args.clients.split(","))
        results["propagation"] = run_propagation(counts, redis_url=args.redis_url)
        if not args.json:
            _print_propagation(results["propagation"], args.redis_url)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
