"""``flagstaff bench``: load any etcd v3 endpoint (Flagstaff or etcd) like etcd's benchmark tool.

Examples::

    flagstaff bench put --endpoints 127.0.0.1:2379 --conns 10 --clients 200 --total 20000
    flagstaff bench range --consistency s --key-space-size 1000 --clients 100 --duration 10
    flagstaff bench cas --key-space-size 8 --clients 50 --duration 10 --json
    flagstaff bench watch-latency --watchers 300 --streams 30 --rate 100 --total 1000
    flagstaff bench lease-keepalive --clients 100 --duration 10 --procs 2

Exit status: 0 when every request succeeded, 1 when some failed (the report
still prints), 2 for bad flags.
"""

from __future__ import annotations

import argparse
import json
import sys

from consensus.bench.loadgen import BenchConfig, run_benchmark
from consensus.bench.workloads import WORKLOADS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``flagstaff bench`` (etcd benchmark's names where it has one)."""
    parser.description = "Benchmark any etcd v3 endpoint (etcd's benchmark tool's workloads)."
    parser.add_argument("workload", choices=WORKLOADS, help="what to run")
    parser.add_argument(
        "--endpoints", default="127.0.0.1:2379", help="comma-separated host:port of the members"
    )
    parser.add_argument("--conns", type=int, default=1, help="gRPC connections (spread over endpoints)")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients (one call in flight each)")
    parser.add_argument("--total", type=int, default=None, help="requests in all (default 10000; watch: puts)")
    parser.add_argument("--duration", type=float, default=None, help="run for this many seconds instead")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="max requests started per second (0: unlimited; watch: puts/s, default 100)"
    )
    parser.add_argument("--key-size", type=int, default=8, help="key size in bytes")
    parser.add_argument("--val-size", type=int, default=8, help="value size in bytes")
    parser.add_argument("--key-space-size", type=int, default=1, help="number of distinct keys")
    parser.add_argument("--sequential-keys", action="store_true", help="keys in order instead of at random")
    parser.add_argument(
        "--consistency", choices=("l", "s"), default="l", help="range: linearizable (l) or serializable (s)"
    )
    parser.add_argument("--txn-ops", type=int, default=1, help="txn-put: puts per txn")
    parser.add_argument("--watchers", type=int, default=100, help="watch-latency: watchers in all")
    parser.add_argument("--streams", type=int, default=10, help="watch-latency: watch streams in all")
    parser.add_argument("--lease-ttl", type=int, default=60, help="lease-keepalive: TTL of each lease (s)")
    parser.add_argument("--procs", type=int, default=1, help="generator processes to spread clients over")
    parser.add_argument(
        "--transport", choices=("h2", "grpc"), default="h2",
        help="h2: the lean built-in HTTP/2 client (default); grpc: grpc.aio (reference)",
    )
    parser.add_argument("--no-prefill", action="store_true", help="range: do not write the key space first")
    parser.add_argument("--seed", type=int, default=1, help="seed of the key choice and the value")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The run's :class:`BenchConfig` (ValueError on a bad combination)."""
    endpoints = tuple(e.strip() for e in args.endpoints.split(",") if e.strip())
    return BenchConfig(
        workload=args.workload,
        endpoints=endpoints,
        conns=args.conns,
        clients=args.clients,
        total=args.total,
        duration=args.duration,
        rate=args.rate,
        key_size=args.key_size,
        val_size=args.val_size,
        key_space_size=args.key_space_size,
        sequential_keys=args.sequential_keys,
        consistency=args.consistency,
        txn_ops=args.txn_ops,
        watchers=args.watchers,
        streams=args.streams,
        lease_ttl=args.lease_ttl,
        procs=args.procs,
        transport=args.transport,
        seed=args.seed,
        prefill=not args.no_prefill,
    ).resolved()


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print its report; 0 if every request succeeded."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"flagstaff bench: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_benchmark(config)
    except (RuntimeError, OSError) as exc:
        print(f"flagstaff bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(report.text())
    return 0 if report.errors == 0 and report.ok > 0 else 1
