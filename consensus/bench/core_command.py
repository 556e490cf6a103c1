"""``flagstaff bench-core``: the core's raw numbers without gRPC, as one JSON document.

Sections:

``wal``
    :func:`consensus.storage.bench.wal_append_benchmark`: appends/s with an
    fsync per append and with group commit, on the disk under ``--dir``.
``raft_sim``
    :func:`consensus.sim.throughput.measure` (three members in one process,
    no I/O): entries committed per CPU-second, batched and unbatched
    proposals. Skipped when that module is absent from this checkout.
``apply``
    one member's state machine (:class:`consensus.server.etcd_state.EtcdStateMachine`):
    puts and one-put txns applied per CPU-second (decode of the replicated
    payload + the MVCC write), and serializable ranges served per
    CPU-second without gRPC (request conversion, key-space lookup, response
    fill and serialization) -- the ceilings the gRPC server can approach.

``make bench`` runs this with its defaults. Numbers, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``flagstaff bench-core``."""
    parser.description = "Raw core benchmarks (WAL, Raft simulator, apply) as JSON."
    parser.add_argument("--dir", default="var/bench", help="directory on the disk the WAL bench uses")
    parser.add_argument("--wal-seconds", type=float, default=2.0, help="seconds per WAL mode")
    parser.add_argument("--wal-writers", type=int, default=8, help="concurrent writers for group commit")
    parser.add_argument("--entry-size", type=int, default=256, help="WAL entry / value size in bytes")
    parser.add_argument("--sim-entries", type=int, default=10_000, help="entries per simulator run")
    parser.add_argument("--apply-entries", type=int, default=20_000, help="requests per apply run")
    parser.add_argument("--key-space-size", type=int, default=10_000, help="keys the apply runs touch")
    parser.add_argument(
        "--only", default="wal,raft_sim,apply", help="comma-separated sections to run (wal,raft_sim,apply)"
    )


def _cpu_rate(count: int, body: Callable[[], None]) -> dict[str, Any]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    body()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "count": count,
        "cpu_seconds": round(cpu, 4),
        "wall_seconds": round(wall, 4),
        "per_cpu_second": round(count / cpu, 1) if cpu > 0 else None,
        "cpu_us_each": round(cpu / count * 1e6, 2) if count else None,
    }


def apply_benchmark(entries: int, key_space: int, value_size: int) -> dict[str, Any]:
    """Apply rate of :class:`EtcdStateMachine` for puts and txns, and the local range rate."""
    from consensus.server import etcd_codec as codec
    from consensus.server.etcd_state import EtcdStateMachine
    from consensus.server.internal_request import InternalRequest, Op

    rng = random.Random(1)
    value = rng.randbytes(value_size)
    keys = [b"%08d" % n for n in range(key_space)]
    picks = [rng.randrange(key_space) for _ in range(entries)]
    puts = [
        InternalRequest(Op.PUT, pb.PutRequest(key=keys[k], value=value).SerializeToString()).encode()
        for k in picks
    ]
    txns = [
        InternalRequest(
            Op.TXN,
            pb.TxnRequest(
                success=[pb.RequestOp(request_put=pb.PutRequest(key=keys[k], value=value))]
            ).SerializeToString(),
        ).encode()
        for k in picks
    ]
    ranges = [pb.RangeRequest(key=keys[k], serializable=True) for k in picks]

    fsm = EtcdStateMachine()

    def apply_puts() -> None:
        apply = fsm.apply
        for i, data in enumerate(puts, start=1):
            apply(i, 1, data)

    def apply_txns() -> None:
        apply = fsm.apply
        base = len(puts)
        for i, data in enumerate(txns, start=base + 1):
            apply(i, 1, data)

    def serve_ranges() -> None:
        kv = fsm.kv
        for request in ranges:
            result = kv.range(codec.range_from_pb(request))
            out = pb.RangeResponse(header=pb.ResponseHeader(revision=result.revision))
            codec.fill_range_response(out, result, keys_only=False).SerializeToString()

    return {
        "entries": entries,
        "key_space_size": key_space,
        "value_size": value_size,
        "apply_put": _cpu_rate(entries, apply_puts),
        "apply_txn_put": _cpu_rate(entries, apply_txns),
        "serve_range_serializable_no_grpc": _cpu_rate(entries, serve_ranges),
    }


def raft_sim_benchmark(entries: int) -> dict[str, Any]:
    """The simulator's commit throughput, batched and unbatched (skipped if not in this build)."""
    try:
        from consensus.sim import throughput
    except ModuleNotFoundError as exc:
        return {"skipped": f"{exc.name} is not in this checkout"}
    out: dict[str, Any] = {}
    for label, batched in (("batched", True), ("unbatched", False)):
        result = throughput.measure(entries, batched=batched)
        out[label] = result.as_dict()
    return out


def wal_benchmark(directory: str, seconds: float, entry_size: int, writers: int) -> dict[str, Any]:
    """The WAL section: :func:`consensus.storage.bench.wal_append_benchmark` under ``directory``."""
    from consensus.storage.bench import wal_append_benchmark

    return wal_append_benchmark(directory, seconds, entry_size, writers=writers)


def machine() -> dict[str, Any]:
    """Where the numbers were taken."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def run(args: argparse.Namespace) -> int:
    """Run the chosen sections and print one JSON document."""
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sections - {"wal", "raft_sim", "apply"}
    if unknown:
        print(f"flagstaff bench-core: unknown section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine()}
    if "wal" in sections:
        report["wal"] = wal_benchmark(args.dir, args.wal_seconds, args.entry_size, args.wal_writers)
    if "raft_sim" in sections:
        report["raft_sim"] = raft_sim_benchmark(args.sim_entries)
    if "apply" in sections:
        report["apply"] = apply_benchmark(args.apply_entries, args.key_space_size, args.entry_size)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
