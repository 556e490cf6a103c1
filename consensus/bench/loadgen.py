"""The load generator: clients over connections over processes, closed loop or at a fixed rate.

Shape (as etcd's benchmark tool): ``--conns`` connections, ``--clients``
clients sharing them round robin, each client with one call in flight, so a
connection carries ``clients / conns`` concurrent calls. ``--total`` stops
after that many calls, ``--duration`` after that many seconds; ``--rate``
caps the calls started per second across all clients. ``--procs N`` splits
clients, connections, the total, the rate and the watchers evenly over N
processes that start the timed phase together (a barrier) and whose raw
samples are merged, so percentiles stay exact.

Everything on the timed path is callback-driven on one event loop per
process (uvloop when installed): no task per request, request bodies built
before the clock starts (:mod:`consensus.bench.workloads`), replies left
unparsed unless the workload reads them. Each process measures its own CPU
time over the timed phase; the report gives the sum (the generator's cost,
which on a small machine competes with the server).

Workloads other than the closed-loop ones:

``watch-latency``
    ``--watchers`` watchers on one prefix over ``--streams`` Watch streams;
    one writer (in process 0, on a connection of its own) puts ``--total``
    keys under the prefix at ``--rate`` puts/s without waiting for acks.
    For every event received: **latency** = receipt time - the time the
    put was sent (etcd's benchmark definition: it includes the put's own
    commit latency and is an upper bound of commit-to-receipt), and
    **ack_to_event** = receipt time - the time the put's response arrived
    (can be negative: a member may deliver the event before the writer sees
    its ack; it bounds apply-to-receipt from below). All times are
    ``CLOCK_MONOTONIC``, shared by every process on the machine.
``lease-keepalive``
    each client grants one lease (TTL ``--lease-ttl``) during set-up, then
    sends LeaseKeepAlive requests for it on a stream of its own, one in
    flight; latency is request to response.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import multiprocessing
import os
import time
from array import array
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.bench import workloads as wl
from consensus.bench.stats import PartResult, Report, latency_summary, merge_errors
from consensus.bench.transport import OK, STATUS_NAMES, Conn, Stream, connect

_T = TypeVar("_T")

DEFAULT_TOTAL = 10_000
DEFAULT_WATCH_PUTS = 1_000
DEFAULT_WATCH_RATE = 100.0
SETTLE_SECONDS = 5.0
"""How long watchers wait for the last events after the writer's last put was due."""


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run's settings (the command line's flags, resolved)."""

    workload: str
    endpoints: tuple[str, ...]
    conns: int = 1
    clients: int = 1
    total: int | None = None
    duration: float | None = None
    rate: float = 0.0
    key_size: int = 8
    val_size: int = 8
    key_space_size: int = 1
    sequential_keys: bool = False
    consistency: str = "l"
    txn_ops: int = 1
    watchers: int = 100
    streams: int = 10
    lease_ttl: int = 60
    procs: int = 1
    transport: str = "h2"
    seed: int = 1
    prefill: bool = True
    watch_prefix: str = ""
    setup_timeout: float = 30.0

    def resolved(self) -> BenchConfig:
        """Defaults filled in (total, watch rate and prefix) and every setting validated."""
        cfg = self
        if cfg.workload not in wl.WORKLOADS:
            raise ValueError(f"unknown workload {cfg.workload!r} (one of {', '.join(wl.WORKLOADS)})")
        if not cfg.endpoints:
            raise ValueError("--endpoints is empty")
        if cfg.total is None and cfg.duration is None:
            default = DEFAULT_WATCH_PUTS if cfg.workload == "watch-latency" else DEFAULT_TOTAL
            cfg = dataclasses.replace(cfg, total=default)
        if cfg.workload == "watch-latency":
            if cfg.rate <= 0:
                cfg = dataclasses.replace(cfg, rate=DEFAULT_WATCH_RATE)
            if not cfg.watch_prefix:
                cfg = dataclasses.replace(cfg, watch_prefix=f"/bench-watch/{os.urandom(4).hex()}/")
            if cfg.watchers < 1 or cfg.streams < 1:
                raise ValueError("--watchers and --streams must be at least 1")
            if cfg.streams > cfg.watchers:
                cfg = dataclasses.replace(cfg, streams=cfg.watchers)
        for name in ("conns", "clients", "procs"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"--{name} must be at least 1")
        if cfg.procs > cfg.clients and cfg.workload != "watch-latency":
            raise ValueError("--procs cannot exceed --clients")
        if cfg.workload == "watch-latency" and cfg.procs > cfg.streams:
            raise ValueError("--procs cannot exceed --streams for watch-latency")
        if cfg.total is not None and cfg.total < 0:
            raise ValueError("--total must not be negative")
        if cfg.duration is not None and cfg.duration <= 0:
            raise ValueError("--duration must be positive")
        if cfg.transport not in ("h2", "grpc"):
            raise ValueError("--transport must be 'h2' or 'grpc'")
        cfg.keys().validate()
        return cfg

    def keys(self) -> wl.KeySpec:
        """The key and value settings of this run."""
        return wl.KeySpec(
            self.key_size, self.val_size, self.key_space_size, self.sequential_keys, self.seed
        )

    def public(self) -> dict[str, Any]:
        """The settings that describe the run (for the JSON report)."""
        out = dataclasses.asdict(self)
        out["endpoints"] = ",".join(self.endpoints)
        for name in ("setup_timeout", "prefill"):
            out.pop(name)
        if self.workload != "watch-latency":
            for name in ("watchers", "streams", "watch_prefix"):
                out.pop(name)
        if self.workload != "lease-keepalive":
            out.pop("lease_ttl")
        if self.workload != "range":
            out.pop("consistency")
        if self.workload != "txn-put":
            out.pop("txn_ops")
        return out


def _split(n: int, parts: int, index: int) -> int:
    return n // parts + (1 if index < n % parts else 0)


@dataclass(frozen=True)
class Share:
    """What one generator process runs: its slice of every divisible setting."""

    index: int
    endpoints: tuple[str, ...]
    clients: int
    total: int | None
    rate: float
    watchers: int
    streams: int
    writer: bool


def share_of(cfg: BenchConfig, index: int) -> Share:
    """Process ``index``'s share of ``cfg`` (connections spread over endpoints round robin)."""
    conns_before = sum(max(1, _split(cfg.conns, cfg.procs, i)) for i in range(index))
    conns = max(1, _split(cfg.conns, cfg.procs, index))
    endpoints = tuple(
        cfg.endpoints[(conns_before + j) % len(cfg.endpoints)] for j in range(conns)
    )
    watch = cfg.workload == "watch-latency"
    return Share(
        index=index,
        endpoints=endpoints,
        clients=_split(cfg.clients, cfg.procs, index),
        total=(cfg.total if watch else _split(cfg.total, cfg.procs, index)) if cfg.total is not None else None,
        rate=cfg.rate if watch else cfg.rate / cfg.procs,
        watchers=_split(cfg.watchers, cfg.procs, index),
        streams=max(1, _split(cfg.streams, cfg.procs, index)),
        writer=index == 0,
    )


# -- one process -----------------------------------------------------------------------


async def call(conn: Conn, path: str, body: bytes, timeout: float = 10.0) -> bytes:
    """One unary call, awaited (set-up and clean-up only): the reply, or RuntimeError."""
    future: asyncio.Future[tuple[int, bytes, str]] = asyncio.get_running_loop().create_future()

    def done(status: int, payload: bytes, text: str) -> None:
        if not future.done():
            future.set_result((status, payload, text))

    conn.unary(path, body, done)
    status, payload, text = await asyncio.wait_for(future, timeout)
    if status != OK:
        raise RuntimeError(f"{path}: {STATUS_NAMES.get(status, status)}: {text}")
    return payload


class _Budget:
    """Shared stop conditions and the rate limiter of one process's clients."""

    def __init__(self, total: int | None, duration: float | None, rate: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.remaining = total if total is not None else math.inf
        self.deadline = self.loop.time() + duration if duration is not None else math.inf
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_slot = self.loop.time()

    def take(self) -> float | None:
        """Claim one call: None when the run is over, else the loop time to start it at."""
        if self.remaining <= 0:
            return None
        now = self.loop.time()
        if now >= self.deadline:
            return None
        self.remaining -= 1
        if not self.interval:
            return now
        slot = self.next_slot if self.next_slot > now else now
        self.next_slot = slot + self.interval
        return slot


class _ClosedLoopClient:
    """One client of a closed-loop workload: one call in flight, the next on each reply."""

    __slots__ = ("budget", "conn", "context", "finished", "part", "path", "sent", "workload")

    def __init__(
        self,
        workload: wl.UnaryWorkload,
        conn: Conn,
        budget: _Budget,
        part: PartResult,
        finished: Callable[[], None],
    ) -> None:
        self.workload = workload
        self.path = workload.path
        self.conn = conn
        self.budget = budget
        self.part = part
        self.finished = finished
        self.sent = 0.0
        self.context: Any = None

    def next(self) -> None:
        slot = self.budget.take()
        if slot is None:
            self.finished()
            return
        delay = slot - self.budget.loop.time()
        if delay > 0:
            self.budget.loop.call_later(delay, self.send)
        else:
            self.send()

    def send(self) -> None:
        body, self.context = self.workload.request()
        self.sent = time.perf_counter()
        self.conn.unary(self.path, body, self.on_reply)

    def on_reply(self, status: int, payload: bytes, text: str) -> None:
        elapsed = time.perf_counter() - self.sent
        part = self.part
        if status == OK:
            problem = self.workload.reply(self.context, payload)
            if problem is None:
                part.ok += 1
                part.latencies.append(elapsed)
            else:
                part.error("BAD_REPLY", problem)
        else:
            part.error(STATUS_NAMES.get(status, str(status)), text)
        self.next()


async def _run_clients(starts: list[Callable[[], None]], register: list[Callable[[], None]]) -> None:
    """Start every client and wait until each has called its ``finished`` hook."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    left = [len(starts)]

    def finished() -> None:
        left[0] -= 1
        if left[0] == 0 and not done.done():
            done.set_result(None)

    register.append(finished)
    if not starts:
        return
    for start in starts:
        start()
    await done


async def _closed_loop(cfg: BenchConfig, share: Share, conns: list[Conn], part: PartResult) -> Callable[[], Awaitable[None]]:
    workload = wl.unary_workload(
        cfg.workload,
        cfg.keys(),
        offset=share.index * 1_000_003,
        consistency=cfg.consistency,
        txn_ops=cfg.txn_ops,
    )

    async def timed() -> None:
        budget = _Budget(share.total, cfg.duration, share.rate)
        hook: list[Callable[[], None]] = []
        clients = [
            _ClosedLoopClient(workload, conns[i % len(conns)], budget, part, lambda: hook[0]())
            for i in range(share.clients)
        ]
        await _run_clients([c.next for c in clients], hook)
        part.extra.update(workload.extra())

    return timed


class _KeepAliveClient:
    """One lease-keepalive client: its lease, its stream, one keepalive in flight."""

    __slots__ = ("body", "budget", "conn", "done", "finished", "part", "sent", "stream")

    def __init__(self, conn: Conn, lease_id: int, budget: _Budget, part: PartResult) -> None:
        self.conn = conn
        self.body = wl.lease_keepalive(lease_id)
        self.budget = budget
        self.part = part
        self.sent = 0.0
        self.done = False
        self.finished: Callable[[], None] = lambda: None
        self.stream: Stream | None = None

    def start(self) -> None:
        self.stream = self.conn.stream(wl.LEASE_KEEPALIVE, self.on_message, self.on_close)
        self.next()

    def next(self) -> None:
        slot = self.budget.take()
        if slot is None:
            self.finish()
            return
        delay = slot - self.budget.loop.time()
        if delay > 0:
            self.budget.loop.call_later(delay, self.send)
        else:
            self.send()

    def send(self) -> None:
        assert self.stream is not None
        self.sent = time.perf_counter()
        self.stream.send(self.body)

    def on_message(self, payload: bytes) -> None:
        elapsed = time.perf_counter() - self.sent
        if pb.LeaseKeepAliveResponse.FromString(payload).TTL > 0:
            self.part.ok += 1
            self.part.latencies.append(elapsed)
        else:
            self.part.error("BAD_REPLY", "keepalive answered TTL <= 0 (lease not found)")
        self.next()

    def on_close(self, status: int, text: str) -> None:
        if not self.done:
            self.part.error(STATUS_NAMES.get(status, str(status)), text or "stream ended")
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.stream is not None:
            self.stream.close()
        self.finished()


async def _lease_keepalive(cfg: BenchConfig, share: Share, conns: list[Conn], part: PartResult) -> Callable[[], Awaitable[None]]:
    grants = await asyncio.gather(
        *(
            call(conns[i % len(conns)], wl.LEASE_GRANT, wl.lease_grant(cfg.lease_ttl))
            for i in range(share.clients)
        )
    )
    leases = [pb.LeaseGrantResponse.FromString(g).ID for g in grants]

    async def timed() -> None:
        budget = _Budget(share.total, cfg.duration, share.rate)
        hook: list[Callable[[], None]] = []
        clients = [
            _KeepAliveClient(conns[i % len(conns)], lease, budget, part)
            for i, lease in enumerate(leases)
        ]
        for client in clients:
            client.finished = lambda: hook[0]()
        await _run_clients([c.start for c in clients], hook)
        with contextlib.suppress(Exception):
            await asyncio.gather(
                *(call(conns[i % len(conns)], wl.LEASE_REVOKE, wl.lease_revoke(lease))
                  for i, lease in enumerate(leases))
            )

    return timed


class _Watchers:
    """The watch streams of one process and the receipt time of every event."""

    def __init__(self, prefix: bytes, part: PartResult) -> None:
        self.prefix = prefix
        self.skip = len(prefix)
        self.part = part
        self.created = 0
        self.expected_created = 0
        self.received = 0
        self.streams: list[Stream] = []
        self.all_created: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.changed: asyncio.Event = asyncio.Event()

    def on_message(self, payload: bytes) -> None:
        now = time.monotonic()
        response = pb.WatchResponse.FromString(payload)
        if response.created:
            self.created += 1
            if self.created >= self.expected_created and not self.all_created.done():
                self.all_created.set_result(None)
        if response.canceled:
            self.part.error("WATCH_CANCELED", response.cancel_reason or "watch canceled")
        if response.events:
            seq_list, t_list, skip = self.part.watch_seq, self.part.watch_t, self.skip
            for event in response.events:
                seq_list.append(int(event.kv.key[skip:]))
                t_list.append(now)
            self.received += len(response.events)
            self.changed.set()

    def on_close(self, status: int, text: str) -> None:
        self.part.error(STATUS_NAMES.get(status, str(status)), text or "watch stream ended")
        if not self.all_created.done():
            self.all_created.set_exception(RuntimeError(f"watch stream closed: {STATUS_NAMES.get(status)}: {text}"))
        self.changed.set()


async def _watch_latency(cfg: BenchConfig, share: Share, conns: list[Conn], part: PartResult) -> Callable[[], Awaitable[None]]:
    prefix = cfg.watch_prefix.encode()
    watchers = _Watchers(prefix, part)
    watchers.expected_created = share.watchers
    create = wl.watch_create(prefix)
    for s in range(share.streams):
        stream = conns[s % len(conns)].stream(wl.WATCH, watchers.on_message, watchers.on_close)
        watchers.streams.append(stream)
        for _ in range(_split(share.watchers, share.streams, s)):
            stream.send(create)
    if share.watchers:
        await asyncio.wait_for(watchers.all_created, cfg.setup_timeout)
    writer_conn = await connect(cfg.endpoints[0], cfg.transport) if share.writer else None
    puts = share.total if share.total is not None else int((cfg.duration or 0) * cfg.rate)
    value = cfg.keys().value()

    async def timed() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        expected = puts * share.watchers
        writer_done: asyncio.Future[None] = loop.create_future()
        if writer_conn is not None:
            sent = part.put_sent
            acked = part.put_acked
            sent.extend([math.nan] * puts)
            acked.extend([math.nan] * puts)
            put_lat: list[float] = []
            outstanding = [puts]
            bodies = [wl.watch_put(prefix, seq, value) for seq in range(puts)]

            def put(seq: int) -> None:
                t0 = time.monotonic()
                sent[seq] = t0

                def on_ack(status: int, _: bytes, text: str) -> None:
                    t1 = time.monotonic()
                    if status == OK:
                        acked[seq] = t1
                        put_lat.append(t1 - t0)
                    else:
                        part.error("PUT_" + STATUS_NAMES.get(status, str(status)), text)
                    outstanding[0] -= 1
                    if outstanding[0] == 0 and not writer_done.done():
                        writer_done.set_result(None)

                writer_conn.unary(wl.KV_PUT, bodies[seq], on_ack)

            for seq in range(puts):
                loop.call_at(started + seq / cfg.rate, put, seq)
            if puts == 0:
                writer_done.set_result(None)
        else:
            writer_done.set_result(None)
        deadline = started + puts / cfg.rate + SETTLE_SECONDS
        while watchers.received < expected and loop.time() < deadline:
            watchers.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(watchers.changed.wait(), max(0.0, deadline - loop.time()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(writer_done, max(0.1, deadline - loop.time()))
        if writer_conn is not None:
            part.extra["put_latency_s"] = put_lat
            await writer_conn.close()
        part.ok = watchers.received
        for stream in watchers.streams:
            stream.close()

    return timed


_SETUPS: dict[str, Callable[[BenchConfig, Share, list[Conn], PartResult], Coroutine[Any, Any, Callable[[], Awaitable[None]]]]] = {
    "put": _closed_loop,
    "range": _closed_loop,
    "txn-put": _closed_loop,
    "cas": _closed_loop,
    "watch-latency": _watch_latency,
    "lease-keepalive": _lease_keepalive,
}


async def run_part(
    cfg: BenchConfig, index: int, wait_start: Callable[[], Awaitable[None]] | None = None
) -> PartResult:
    """Run process ``index``'s share: connect, set up, wait for the others, then the timed phase."""
    share = share_of(cfg, index)
    part = PartResult(index)
    conns: list[Conn] = []
    timed: Callable[[], Awaitable[None]] | None = None
    try:
        conns = list(await asyncio.gather(*(connect(ep, cfg.transport) for ep in share.endpoints)))
        timed = await _SETUPS[cfg.workload](cfg, share, conns, part)
    except Exception as exc:
        part.setup_error = f"{type(exc).__name__}: {exc}"
    try:
        if wait_start is not None:
            await wait_start()
        if timed is not None:
            cpu0 = time.process_time()
            part.started = time.monotonic()
            await timed()
            part.ended = time.monotonic()
            part.cpu_s = time.process_time() - cpu0
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()
    return part


def run_loop(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        return asyncio.run(coro)
    result: _T = uvloop.run(coro)
    return result


def _child(cfg: BenchConfig, index: int, barrier: Any, results: Any) -> None:
    """Entry point of a generator process: run the share, send the result back."""

    async def wait_start() -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, cfg.setup_timeout * 2)

    try:
        part = run_loop(run_part(cfg, index, wait_start))
    except Exception as exc:
        part = PartResult(index, setup_error=f"{type(exc).__name__}: {exc}")
    results.put(part)


def _run_parts(cfg: BenchConfig) -> list[PartResult]:
    if cfg.procs == 1:
        return [run_loop(run_part(cfg, 0))]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(cfg.procs)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(cfg, i, barrier, results), daemon=True)
        for i in range(cfg.procs)
    ]
    for proc in procs:
        proc.start()
    parts: list[PartResult] = []
    try:
        for _ in procs:
            parts.append(results.get(timeout=cfg.setup_timeout * 4 + (cfg.duration or 0) + 600))
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return sorted(parts, key=lambda p: p.index)


def _prefill(cfg: BenchConfig) -> dict[str, Any]:
    """Write every key of the key space once (range and cas read existing keys)."""
    fill = dataclasses.replace(
        cfg,
        workload="put",
        total=cfg.key_space_size,
        duration=None,
        rate=0.0,
        clients=min(64, cfg.key_space_size),
        conns=max(1, min(cfg.conns, 4)),
        procs=1,
        sequential_keys=True,
    )
    t0 = time.monotonic()
    part = run_loop(run_part(fill, 0))
    if part.setup_error or part.errors:
        raise RuntimeError(f"prefill failed: {part.setup_error or merge_errors([part])}")
    return {"keys": part.ok, "seconds": round(time.monotonic() - t0, 3)}


def run_benchmark(cfg: BenchConfig) -> Report:
    """Run one benchmark (prefill first when the workload reads keys) and merge the processes."""
    cfg = cfg.resolved()
    prefill: dict[str, Any] | None = None
    if cfg.prefill and cfg.workload == "range":
        prefill = _prefill(cfg)
    parts = _run_parts(cfg)
    report = build_report(cfg, parts)
    if prefill is not None:
        report.extra["prefill"] = prefill
    return report


def build_report(cfg: BenchConfig, parts: list[PartResult]) -> Report:
    """Merge the processes' samples and counters into one :class:`Report`."""
    errors = merge_errors(parts)
    for part in parts:
        if part.setup_error:
            key = f"SETUP: {part.setup_error}"
            errors[key] = errors.get(key, 0) + 1
    ran = [p for p in parts if p.ended > 0]
    started = min((p.started for p in ran), default=0.0)
    ended = max((p.ended for p in ran), default=0.0)
    duration = max(ended - started, 1e-9) if ran else 0.0
    ok = sum(p.ok for p in parts)
    cpu = sum(p.cpu_s for p in parts)
    extra: dict[str, Any] = {"unit": "requests"}
    samples: array[float] = array("d")
    if cfg.workload == "watch-latency":
        extra.update(_watch_extra(cfg, parts, errors, samples))
        ok = len(samples)
    else:
        for part in parts:
            samples.extend(part.latencies)
        if cfg.workload == "lease-keepalive":
            extra["unit"] = "keepalives"
        for part in parts:
            for key, value in part.extra.items():
                if isinstance(value, int):
                    extra[key] = extra.get(key, 0) + value
    error_count = sum(errors.values())
    return Report(
        workload=cfg.workload,
        config=cfg.public(),
        ok=ok,
        errors=error_count,
        error_kinds=errors,
        duration_s=duration,
        throughput=ok / duration if duration else 0.0,
        latency_ms=latency_summary(samples),
        generator={
            "cpu_s": round(cpu, 4),
            "cores": round(cpu / duration, 3) if duration else 0.0,
            "cpu_us_per_op": round(cpu / ok * 1e6, 2) if ok else 0.0,
            "procs": cfg.procs,
            "transport": cfg.transport,
        },
        extra=extra,
    )


def _watch_extra(
    cfg: BenchConfig, parts: list[PartResult], errors: dict[str, int], samples: array[float]
) -> dict[str, Any]:
    writer = parts[0]
    sent, acked = writer.put_sent, writer.put_acked
    ack_deltas: list[float] = []
    for part in parts:
        for seq, t in zip(part.watch_seq, part.watch_t, strict=True):
            if 0 <= seq < len(sent):
                samples.append(t - sent[seq])
                if not math.isnan(acked[seq]):
                    ack_deltas.append(t - acked[seq])
    puts_ok = sum(1 for a in acked if not math.isnan(a))
    watchers = sum(share_of(cfg, p.index).watchers for p in parts)
    missing = puts_ok * watchers - len(samples)
    if missing > 0:
        errors["MISSING_EVENTS: events of acknowledged puts never received"] = missing
    put_lat = writer.extra.get("put_latency_s", [])
    return {
        "unit": "events",
        "watchers": watchers,
        "puts": len(sent),
        "puts_acked": puts_ok,
        "ack_to_event_ms": latency_summary(ack_deltas),
        "put_latency_ms": latency_summary(put_lat),
    }
