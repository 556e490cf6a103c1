"""``python -m discovery.bench``: many instances keeping their leases alive, and the CPU it costs.

Starts a fresh 3-member core (``flagstaff node``), migrates a scratch SQLite
platform database and creates a SERVICE token in it, starts the Registry
(``manage.py run_discovery``), then ``--workers`` load processes register
``--instances`` instances (TTL ``--ttl``) and renew each one every
``--interval`` seconds on its own KeepAlive stream (as that many service
processes would). After ``--warmup`` seconds it measures for ``--duration``
seconds: renewals per second, the renewal round trip (p50, p99, max), leases
lost (a renewal answered with TTL 0: the load process registers again, as the
helper does, and counts it),
and the CPU time of the Registry and of each core member, from
``/proc/<pid>/stat``, as a share of one core. Prints a table and a JSON line.
Everything listens on free loopback ports and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


# -- the load: one worker process ---------------------------------------------------------------


async def _worker(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb
    from discovery.client import RegistryClient

    stats: dict[str, Any] = {"registered": 0, "renewals": 0, "lost": 0, "errors": 0,
                             "measured_renewals": 0}
    latencies: list[float] = []
    measuring = asyncio.Event()
    stop = asyncio.Event()
    async with RegistryClient(args.target, args.token, timeout=30) as client:
        gate = asyncio.Semaphore(50)

        async def one(i: int) -> None:
            async def register() -> int:
                async with gate:
                    response = await client.register(
                        "bench", f"w{args.worker_id}-{i}", "127.0.0.1", 10000 + i, ttl=args.ttl,
                        tags=["bench"], metadata={"worker": str(args.worker_id)})
                return int(response.lease_id)

            lease = await register()
            stats["registered"] += 1
            call = client.stub.KeepAlive(metadata=client.metadata)
            loop = asyncio.get_running_loop()
            due = loop.time() + random.random() * args.interval  # spread over the interval
            try:
                while not stop.is_set():
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    due += args.interval  # a fixed rate: one renewal per interval
                    sent = loop.time()
                    await call.write(pb.KeepAliveRequest(lease_id=lease))
                    answer = await call.read()
                    if measuring.is_set():
                        latencies.append(loop.time() - sent)
                    if answer is grpc.aio.EOF:
                        stats["errors"] += 1
                        return
                    if answer.ttl_seconds <= 0:  # expired: register again, as the helper does
                        stats["lost"] += 1
                        lease = await register()
                    else:
                        stats["renewals"] += 1
                        if measuring.is_set():
                            stats["measured_renewals"] += 1
            except grpc.aio.AioRpcError:
                stats["errors"] += 1
            finally:
                call.cancel()

        tasks = [asyncio.get_running_loop().create_task(one(i)) for i in range(args.count)]
        print("ready", flush=True)  # registration proceeds; the parent waits for "go"
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        await reader.readline()  # "measure"
        measuring.set()
        await reader.readline()  # "stop"
        measuring.clear()
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stats["latencies"] = sorted(latencies)
    return stats


# -- the orchestra ------------------------------------------------------------------------------


def _spawn(argv: list[str], log: Path, env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True, **kwargs)


def _wait(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"bench: timed out waiting for {what}")


def _members(base: Path, env: dict[str, str]) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    from consensus.up import member_endpoints, member_specs

    while True:  # a base port whose 9 ports (base, +20000, +30000, each +0..2) are free
        port = random.randint(12000, 20000)
        ports = [port + o + d for o in (0, 20000, 30000) for d in range(3)]
        try:
            for p in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            break
        except OSError:
            continue
    endpoints = member_endpoints(port)
    procs = []
    for spec in member_specs(endpoints, str(base), ["--heartbeat-interval=100",
                                                     "--election-timeout=1000"]):
        procs.append(_spawn(spec.argv, base / f"{spec.name}.log", env))
    return procs, [e.client_url.removeprefix("http://") for e in endpoints]


def _leader_ready(endpoints: list[str]) -> bool:
    from consensus.client import Client

    async def probe() -> bool:
        async with Client(endpoints, timeout=2) as client:
            await client.put("/bench/ready", "1")
            return True

    return asyncio.run(probe())


def _setup_platform(env: dict[str, str], log: Path) -> str:
    manage = [sys.executable, str(ROOT / "manage.py")]
    with open(log, "ab") as out:
        subprocess.run([*manage, "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True,
                       stdout=out, stderr=subprocess.STDOUT)
    script = (
        "from django.contrib.auth import get_user_model\n"
        "from flags.tokens import TokenKind, do_create_token\n"
        "u = get_user_model().objects.create_superuser('bench', password='bench-password')\n"
        "_, s = do_create_token(created_by=u, name='bench', kind=TokenKind.SERVICE, "
        "scope='bench', can_write=True)\n"
        "print('SECRET', s)\n"
    )
    out = subprocess.run([*manage, "shell", "-c", script], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("SECRET "))


def run(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="flagstaff-bench-discovery-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]),
                "DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings",
                "FLAGSTAFF_VAR_DIR": str(base / "var"), "PYTHONUNBUFFERED": "1"})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        members, endpoints = _members(base, env)
        procs += members
        env["FLAGSTAFF_ENDPOINTS"] = ",".join(endpoints)
        _wait(lambda: _leader_ready(endpoints), 60, "the core to elect a leader")
        secret = _setup_platform(env, base / "setup.log")
        port = _free_port()
        registry = _spawn([sys.executable, str(ROOT / "manage.py"), "run_discovery", "--port",
                           str(port)], base / "registry.log", env)
        procs.append(registry)
        _wait(lambda: "listening" in (base / "registry.log").read_text(), 60,
              "the Registry to listen")
        per_worker = [args.instances // args.workers + (1 if i < args.instances % args.workers
                                                        else 0) for i in range(args.workers)]
        workers = []
        for i, count in enumerate(per_worker):
            worker = subprocess.Popen(
                [sys.executable, "-m", "discovery.bench", "--worker", "--worker-id", str(i),
                 "--count", str(count), "--target", f"127.0.0.1:{port}", "--token", secret,
                 "--ttl", str(args.ttl), "--interval", str(args.interval)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env, text=True)
            workers.append(worker)
            procs.append(worker)  # type: ignore[arg-type]
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        print(f"bench: {args.instances} instances registering and renewing every "
              f"{args.interval:g}s; warming up {args.warmup:g}s", flush=True)
        time.sleep(args.warmup)
        watched = {"registry": registry.pid} | {f"core m{i + 1}": p.pid
                                                 for i, p in enumerate(members)}
        load_pids = [w.pid for w in workers]
        before = {name: _cpu_seconds(pid) for name, pid in watched.items()}
        load_before = sum(_cpu_seconds(pid) for pid in load_pids)
        started = time.monotonic()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("measure\n")
            worker.stdin.flush()
        time.sleep(args.duration)
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("stop\n")
            worker.stdin.flush()
        elapsed = time.monotonic() - started
        after = {name: _cpu_seconds(pid) for name, pid in watched.items()}
        load_cpu = sum(_cpu_seconds(pid) for pid in load_pids) - load_before
        totals = {"registered": 0, "renewals": 0, "lost": 0, "errors": 0, "measured_renewals": 0}
        latencies: list[float] = []
        for worker in workers:
            out, _ = worker.communicate(timeout=60)
            stats = json.loads(out.strip().splitlines()[-1])
            for key in totals:
                totals[key] += stats[key]
            latencies.extend(stats["latencies"])
        latencies.sort()

        def quantile(q: float) -> float:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) \
                if latencies else 0.0
        cpu = {name: (after[name] - before[name]) / elapsed for name in watched}
        result = {
            "instances": args.instances, "interval": args.interval, "ttl": args.ttl,
            "seconds": round(elapsed, 1), "registered": totals["registered"],
            "renewals_per_second": round(totals["measured_renewals"] / elapsed, 1),
            "leases_lost": totals["lost"], "stream_errors": totals["errors"],
            "renewal_ms": {"p50": quantile(0.5), "p99": quantile(0.99), "max": quantile(1.0)},
            "cpu_cores": {k: round(v, 3) for k, v in cpu.items()},
            "cpu_cores_core_total": round(sum(v for k, v in cpu.items() if k.startswith("core")),
                                          3),
            "cpu_cores_load_generator": round(load_cpu / elapsed, 3),
            "loadavg": os.getloadavg()[0],
        }
        print(f"instances {args.instances}, renew every {args.interval:g}s, ttl {args.ttl}s, "
              f"measured {elapsed:.1f}s")
        print(f"  registered {totals['registered']}, renewals/s "
              f"{result['renewals_per_second']}, leases lost {totals['lost']}, "
              f"stream errors {totals['errors']}")
        print(f"  renewal round trip p50 {result['renewal_ms']['p50']} ms, p99 "
              f"{result['renewal_ms']['p99']} ms, max {result['renewal_ms']['max']} ms")
        for name, share in cpu.items():
            print(f"  cpu {name:<9} {share * 100:6.1f}% of a core")
        print(f"  cpu load generator {load_cpu / elapsed * 100:6.1f}% of a core "
              f"(loadavg {result['loadavg']:.2f})")
        print(json.dumps(result))
        return 0 if totals["lost"] == 0 and totals["registered"] == args.instances else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"bench: logs under {base}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m discovery.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between renewals")
    parser.add_argument("--ttl", type=int, default=5, help="the instances' TTL in seconds")
    parser.add_argument("--workers", type=int, default=4, help="load-generating processes")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--target", default="", help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args))), flush=True)
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
