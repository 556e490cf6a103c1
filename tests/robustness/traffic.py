"""The seeded traffic generator: concurrent ``consensus.client`` clients recording a history.

:class:`Traffic` runs, on one event loop:

* ``clients`` op loops, each with its own ``random.Random((seed, client))``
  choosing from a weighted mix: linearizable and serializable gets, range
  lists, small and ~32 KiB puts, puts with a lease, deletes, compare-and-set
  txns (on the mod revision it last saw, or create-if-absent), lease grants
  and revokes, compactions at a random safe revision, defragments. Some
  clients are pinned to one member (so during a partition they keep talking
  to the isolated one); the others have every endpoint;
* long-lived watchers of the whole key prefix from revision 1 (with progress
  notifications), on separate clients starting on different members; and a
  churn of short watchers on random ranges from random revisions (resumption
  from a revision, cancellation);
* keep-alives for the leases granted as "kept alive", with a monitor that
  notes when a keep-alive *lapsed* on the client side (no renewal before the
  last known expiry: then the server may legitimately expire the lease).

Every call is recorded into a :class:`~tests.robustness.history.History`
with invoke/return times from one monotonic clock (the scenario's), its
result, or its error; a mutation that raised ``UncertainResultError`` (or a
deadline) is recorded with an unknown outcome and no return time. The mix is
fully determined by the seed; the interleaving is whatever the machine does,
which is why the history, not the seed, is what the checkers judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from consensus.client import (
    Client,
    CompactedError,
    EtcdError,
    UncertainResultError,
    compare_mod,
    compare_version,
    op_get,
    op_put,
    prefix_end,
)
from consensus.client.errors import DeadlineExceededError
from consensus.client.lease import KeepAlive
from consensus.client.watch import Watch
from tests.robustness.history import (
    FAILED,
    OK,
    UNKNOWN,
    History,
    LeaseRecord,
    Operation,
    WatchBatch,
    WatchEvent,
    WatchRecord,
    key_str,
    kv_dict,
    make_value,
    parse_value,
)

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS: dict[str, float] = {
    "get": 14,
    "get_serializable": 8,
    "range": 5,
    "range_serializable": 4,
    "get_historical": 4,
    "range_limit": 3,
    "put": 18,
    "put_large": 3,
    "put_lease": 5,
    "delete": 5,
    "txn": 12,
    "lease_grant": 2,
    "lease_revoke": 1.5,
    "compact": 0.6,
    "defragment": 0.3,
}


@dataclass
class TrafficConfig:
    """What the traffic does; with the seed, it describes a run's load completely."""

    seed: int
    clients: int = 4
    pinned_clients: int = 2
    """How many of the clients talk to one member only (client i to member i)."""
    keys: int = 6
    prefix: str = "/rb/"
    small_value_bytes: tuple[int, int] = (16, 256)
    large_value_bytes: int = 32 * 1024
    op_timeout: float = 3.0
    think_ms: tuple[float, float] = (0.0, 4.0)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    max_leases: int = 3
    kept_alive_ttl: int = 10
    expiring_ttl: int = 3
    long_watchers: int = 2
    watch_churn: bool = True
    compaction_margin: int = 20
    """Compact only this many revisions behind what every open watcher has received."""
    request_progress: bool = True
    """Call RequestProgress now and then (etcd 3.4.23 answers it wrongly: etcd-io/etcd#15220)."""


def _range_result(r: Any) -> dict[str, Any]:
    """What a range response contributes to the history."""
    return {"kvs": [kv_dict(kv) for kv in r.kvs], "revision": r.header.revision, "count": r.count, "more": r.more}


def now_since(t0: float) -> float:
    """Seconds since ``t0`` on the monotonic clock."""
    return time.monotonic() - t0


@dataclass
class _Lease:
    record: LeaseRecord
    handle: KeepAlive | None = None
    expires: float = 0.0
    """For an expiring lease: the history time after which it is no longer offered to puts."""


class Traffic:
    """Runs the op loops, watchers and keep-alives of a :class:`TrafficConfig`; records the history."""

    def __init__(self, config: TrafficConfig, endpoints: list[str], history: History, t0: float) -> None:
        self.cfg = config
        self.endpoints = list(endpoints)
        self.history = history
        self.t0 = t0
        self.keys = [f"{config.prefix}k{i:02d}" for i in range(config.keys)]
        history.meta.update(prefix=config.prefix, prefix_end=prefix_end(config.prefix).decode())
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[Client] = []
        self._watch_clients: list[Client] = []
        self._leases: list[_Lease] = []
        self._all_leases: list[_Lease] = []
        self._open_watches: dict[int, WatchRecord] = {}
        self._watch_objs: list[tuple[Watch, WatchRecord, asyncio.Task[None]]] = []
        self._closed = False
        self._monitor: asyncio.Task[None] | None = None
        self._compacted = 0
        self._revision = 1
        self._next_watch_id = 0
        self.errors: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the traffic's ``t0`` (the history's clock)."""
        return now_since(self.t0)

    def _client_endpoints(self, i: int) -> list[str]:
        n = len(self.endpoints)
        if i < self.cfg.pinned_clients:
            return [self.endpoints[i % n]]
        rot = i % n
        return self.endpoints[rot:] + self.endpoints[:rot]

    async def start(self) -> None:
        """Open the clients, start the long-lived watchers (created before any write), then the op loops."""
        loop = asyncio.get_running_loop()
        for i in range(self.cfg.long_watchers):
            rot = i % len(self.endpoints)
            client = Client(self.endpoints[rot:] + self.endpoints[:rot], timeout=self.cfg.op_timeout)
            self._watch_clients.append(client)
            await self._open_watch(client, 1000 + i, self.cfg.prefix, prefix_end(self.cfg.prefix).decode(),
                                   start_revision=1, progress=True, long_lived=True)
        for i in range(self.cfg.clients):
            self._clients.append(Client(self._client_endpoints(i), timeout=self.cfg.op_timeout))
        for i in range(self.cfg.clients):
            self._tasks.append(loop.create_task(self._op_loop(i), name=f"traffic-{i}"))
        self._monitor = loop.create_task(self._lease_monitor(), name="lease-monitor")
        if self.cfg.watch_churn:
            self._tasks.append(loop.create_task(self._watch_churn(), name="watch-churn"))
        self._tasks.append(loop.create_task(self._progress_requests(), name="progress"))

    async def stop(self) -> None:
        """Stop issuing operations (in-flight calls finish or time out; nothing is cancelled mid-call)."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # Short watchers end now; the long-lived ones stay until finish().
        for watch, record, task in list(self._watch_objs):
            if record.id < 1000:
                await self._close_watch(watch, record, task)

    async def finish(self, final_revision: int, timeout: float) -> list[str]:
        """Let the long-lived watchers reach ``final_revision``, then close everything.

        Returns problems (a watcher that did not catch up in time).
        """
        problems: list[str] = []
        deadline = time.monotonic() + timeout
        await self._request_progress(self._watch_clients)
        for watch, record, task in list(self._watch_objs):
            while record.last_revision < final_revision and not task.done():
                if time.monotonic() > deadline:
                    problems.append(
                        f"watch {record.id} reached only revision {record.last_revision} of {final_revision} "
                        f"within {timeout:g}s after the traffic stopped"
                    )
                    break
                await asyncio.sleep(0.1)
                await self._request_progress(self._watch_clients)
            await self._close_watch(watch, record, task)
        self._closed = True
        if self._monitor is not None:
            await self._monitor
        for lease in self._all_leases:
            if lease.handle is not None:
                await lease.handle.close()
        for client in [*self._clients, *self._watch_clients]:
            await client.close()
        return problems

    # -- recording -----------------------------------------------------------------------------------
    async def record(
        self,
        client: int,
        kind: str,
        args: dict[str, Any],
        call: Callable[[], Awaitable[Any]],
        convert: Callable[[Any], dict[str, Any]],
        mutation: bool,
        endpoint: str = "",
    ) -> Operation:
        """Run one call and append it to the history with its timing and outcome."""
        op = Operation(
            id=len(self.history.operations), client=client, kind=kind, call=self.now(), ret=None,
            args=args, status=UNKNOWN, endpoint=endpoint,
        )
        self.history.operations.append(op)
        try:
            response = await call()
        except UncertainResultError as exc:
            op.status, op.error = UNKNOWN, f"UncertainResultError: {exc.cause!r}"
        except DeadlineExceededError as exc:
            op.status = UNKNOWN if mutation else FAILED
            op.error = repr(exc)
            if not mutation:
                op.ret = self.now()
        except EtcdError as exc:
            op.status, op.error, op.ret = FAILED, repr(exc), self.now()
        except Exception as exc:  # anything unexpected: a mutation's fate is unknown
            log.exception("unexpected error in %s", kind)
            op.status = UNKNOWN if mutation else FAILED
            op.error = repr(exc)
            self.errors.append(f"{kind}: {exc!r}")
        else:
            op.ret = self.now()
            op.status = OK
            op.result = convert(response)
            rev = op.result.get("revision", 0)
            self._revision = max(self._revision, rev)
        return op

    # -- the op loop --------------------------------------------------------------------------------------
    async def _op_loop(self, i: int) -> None:
        rng = random.Random(f"{self.cfg.seed}-{i}")
        client = self._clients[i]
        kinds = list(self.cfg.weights)
        weights = [self.cfg.weights[k] for k in kinds]
        seen: dict[str, int] = {}
        while not self._stop.is_set():
            kind = rng.choices(kinds, weights)[0]
            try:
                await self._one(i, rng, client, kind, seen)
            except Exception as exc:  # a bug in the generator must not stop the run silently
                log.exception("traffic client %d failed in %s", i, kind)
                self.errors.append(f"client {i} {kind}: {exc!r}")
            lo, hi = self.cfg.think_ms
            await asyncio.sleep(rng.uniform(lo, hi) / 1000)

    def _tag(self, i: int) -> str:
        return f"c{i}-{len(self.history.operations)}"

    async def _one(self, i: int, rng: random.Random, client: Client, kind: str, seen: dict[str, int]) -> None:
        key = rng.choice(self.keys)
        if kind == "get_historical":
            if self._revision < 2:
                return
            revision = rng.randint(max(2, self._compacted + 1), self._revision)
            serializable = rng.random() < 0.5
            await self.record(
                i, "get", {"key": key, "serializable": serializable, "revision": revision},
                lambda: client.range(key, revision=revision, serializable=serializable),
                _range_result, mutation=False,
            )
        elif kind == "range_limit":
            limit = rng.randint(1, max(1, len(self.keys) - 1))
            serializable = rng.random() < 0.5
            await self.record(
                i, "range",
                {"key": self.cfg.prefix, "range_end": prefix_end(self.cfg.prefix).decode(),
                 "serializable": serializable, "limit": limit},
                lambda: client.get_prefix(self.cfg.prefix, limit=limit, serializable=serializable),
                _range_result, mutation=False,
            )
        elif kind in ("get", "get_serializable"):
            serializable = kind == "get_serializable"
            op = await self.record(
                i, "get", {"key": key, "serializable": serializable},
                lambda: client.range(key, serializable=serializable),
                _range_result, mutation=False,
            )
            if op.status == OK:
                seen[key] = op.result["kvs"][0]["mod"] if op.result["kvs"] else 0
        elif kind in ("range", "range_serializable"):
            serializable = kind == "range_serializable"
            await self.record(
                i, "range",
                {"key": self.cfg.prefix, "range_end": prefix_end(self.cfg.prefix).decode(),
                 "serializable": serializable},
                lambda: client.get_prefix(self.cfg.prefix, serializable=serializable),
                _range_result, mutation=False,
            )
        elif kind in ("put", "put_large", "put_lease"):
            lease = 0
            if kind == "put_lease":
                live = [lz for lz in self._leases if lz.expires == 0 or lz.expires > self.now()]
                if not live:
                    await self._grant(i, rng, client)
                    return
                lease = rng.choice(live).record.lease_id
            size = self.cfg.large_value_bytes if kind == "put_large" else rng.randint(*self.cfg.small_value_bytes)
            tag = self._tag(i)
            value = make_value(tag, size)
            op = await self.record(
                i, "put", {"key": key, "value": tag, "size": size, "lease": lease},
                lambda: client.put(key, value, lease=lease),
                lambda r: {"revision": r.header.revision},
                mutation=True,
            )
            if op.status == OK:
                seen[key] = op.result["revision"]
        elif kind == "delete":
            await self.record(
                i, "delete", {"key": key},
                lambda: client.delete_range(key),
                lambda r: {"deleted": r.deleted, "revision": r.header.revision},
                mutation=True,
            )
        elif kind == "txn":
            create = rng.random() < 0.2
            target = "version" if create else "mod"
            operand = 0 if create else seen.get(key, 0)
            compare = compare_version(key, "=", 0) if create else compare_mod(key, "=", operand)
            size = rng.randint(*self.cfg.small_value_bytes)
            tag = self._tag(i)
            value = make_value(tag, size)

            def convert(r: Any) -> dict[str, Any]:
                out: dict[str, Any] = {"succeeded": r.succeeded, "revision": r.header.revision, "kvs": []}
                if not r.succeeded and r.responses:
                    out["kvs"] = [kv_dict(kv) for kv in r.responses[0].response_range.kvs]
                return out

            op = await self.record(
                i, "txn",
                {"key": key, "compare": target, "operand": operand, "value": tag, "size": size, "lease": 0},
                lambda: client.txn([compare], [op_put(key, value)], [op_get(key)]),
                convert, mutation=True,
            )
            if op.status == OK:
                if op.result["succeeded"]:
                    seen[key] = op.result["revision"]
                else:
                    seen[key] = op.result["kvs"][0]["mod"] if op.result["kvs"] else 0
        elif kind == "lease_grant":
            if len(self._leases) < self.cfg.max_leases:
                await self._grant(i, rng, client)
        elif kind == "lease_revoke":
            if self._leases:
                await self._revoke(i, rng.choice(self._leases), client)
        elif kind == "compact":
            await self._compact(i, rng, client)
        elif kind == "defragment":
            endpoint = rng.choice(self.endpoints)
            await self.record(
                i, "defragment", {"endpoint": endpoint},
                lambda: client.defragment(endpoint=endpoint),
                lambda r: {}, mutation=False, endpoint=endpoint,
            )
        else:
            raise ValueError(f"unknown traffic op {kind!r}")

    # -- leases ---------------------------------------------------------------------------------------------
    async def _grant(self, i: int, rng: random.Random, client: Client) -> None:
        keep = rng.random() < 0.7
        ttl = self.cfg.kept_alive_ttl if keep else self.cfg.expiring_ttl
        op = await self.record(
            i, "lease_grant", {"ttl": ttl, "keep_alive": keep},
            lambda: client.lease_grant(ttl),
            lambda r: {"id": r.ID, "ttl": r.TTL, "revision": r.header.revision},
            mutation=True,
        )
        if op.status != OK:
            return  # an unknown grant: its id is unknown, so nothing can be attached to it
        record = LeaseRecord(op.result["id"], ttl, keep, op.call, op.id)
        self.history.leases.append(record)
        lease = _Lease(record)
        if keep:

            def on_lost(error: EtcdError, r: LeaseRecord = record) -> None:
                self._lost(r, error)

            lease.handle = client.keep_alive(record.lease_id, on_lost=on_lost)
        else:
            lease.expires = op.call + ttl / 2
        self._leases.append(lease)
        self._all_leases.append(lease)

    def _lost(self, record: LeaseRecord, error: EtcdError) -> None:
        record.lost = True
        record.lost_reason = repr(error)
        record.lost_at = self.now()
        if "before it could be renewed" in error.message and not record.lapsed:
            # The client gave up at the expiry it knew of: a lapse, not the server's doing.
            record.lapsed = True
            record.lapsed_at = record.lost_at

    async def _revoke(self, i: int, lease: _Lease, client: Client) -> None:
        lease_id = lease.record.lease_id
        op = await self.record(
            i, "lease_revoke", {"lease": lease_id},
            lambda: client.lease_revoke(lease_id),
            lambda r: {"revision": r.header.revision},
            mutation=True,
        )
        lease.record.revoke_ops.append(op.id)
        if op.status in (OK, UNKNOWN):
            # Keep renewing after an unknown revoke: if it did not happen, the lease must live on.
            if lease in self._leases:
                self._leases.remove(lease)
            if op.status == OK and lease.handle is not None:
                await lease.handle.close()

    async def _lease_monitor(self) -> None:
        """Note keep-alives that lapsed on the client side (no renewal before the known expiry)."""
        loop = asyncio.get_running_loop()
        while not self._closed:  # keep-alives run until finish(), so the watch on them does too
            for lease in self._all_leases:
                h = lease.handle
                if h is None or not h.running:
                    continue
                if h.expires_at is not None and loop.time() > h.expires_at and not lease.record.lapsed:
                    lease.record.lapsed = True
                    lease.record.lapsed_at = self.now()
            await asyncio.sleep(0.1)
            for lease in list(self._leases):
                if lease.expires and self.now() > lease.record.granted_at + lease.record.ttl:
                    self._leases.remove(lease)

    # -- compaction ----------------------------------------------------------------------------------------------
    async def _compact(self, i: int, rng: random.Random, client: Client) -> None:
        watched = [w.last_revision for w in self._open_watches.values()]
        safe = min([self._revision, *watched]) - self.cfg.compaction_margin
        if safe <= self._compacted + 1:
            return
        revision = rng.randint(self._compacted + 1, safe)
        op = await self.record(
            i, "compact", {"revision": revision},
            lambda: client.compact(revision),
            lambda r: {"revision": r.header.revision},
            mutation=True,
        )
        if op.status in (OK, UNKNOWN):
            self._compacted = max(self._compacted, revision)

    # -- watches ---------------------------------------------------------------------------------------------------
    async def _open_watch(
        self, client: Client, client_no: int, key: str, range_end: str, start_revision: int,
        progress: bool, long_lived: bool, prev_kv: bool = False,
    ) -> WatchRecord:
        wid = (1000 if long_lived else 0) + self._next_watch_id
        self._next_watch_id += 1
        record = WatchRecord(id=wid, client=client_no, key=key, range_end=range_end,
                             start_revision=start_revision, started=self.now(), prev_kv=prev_kv)
        self.history.watches.append(record)
        watch = client.watch(key, range_end.encode(), start_revision=start_revision, progress_notify=progress,
                             prev_kv=prev_kv)
        try:
            record.created_revision = await watch.wait_created(timeout=30 if long_lived else 5)
        except EtcdError as exc:
            if isinstance(exc, CompactedError):
                record.error = f"CompactedError: {exc.message}"
            elif isinstance(exc, DeadlineExceededError) and not long_lived:
                record.error = f"NotCreated: {exc!r}"  # its member is down or cut off: nothing to judge
            else:
                record.error = repr(exc)
            record.ended = self.now()
            await watch.close()
            if long_lived:
                raise
            return record
        self._open_watches[wid] = record
        task = asyncio.get_running_loop().create_task(self._consume(watch, record), name=f"watch-{wid}")
        self._watch_objs.append((watch, record, task))
        return record

    async def _consume(self, watch: Watch, record: WatchRecord) -> None:
        try:
            async for batch in watch:
                events = []
                for e in batch.events:
                    kv = e.kv
                    if e.type == 0:
                        event = WatchEvent("put", key_str(kv.key), kv.mod_revision, kv.create_revision,
                                           kv.version, parse_value(kv.value), kv.lease)
                    else:
                        event = WatchEvent("delete", key_str(kv.key), kv.mod_revision)
                    if record.prev_kv and e.HasField("prev_kv"):
                        p = e.prev_kv
                        event.prev = [parse_value(p.value), p.mod_revision, p.create_revision, p.version, p.lease]
                    events.append(event)
                record.batches.append(WatchBatch(self.now(), batch.header.revision, events))
        except CompactedError as exc:
            record.error = f"CompactedError: {exc.message} (compact revision {exc.compact_revision})"
        except EtcdError as exc:
            record.error = repr(exc)
        finally:
            record.ended = self.now()
            record.resumes = watch.resumes
            self._open_watches.pop(record.id, None)

    async def _close_watch(self, watch: Watch, record: WatchRecord, task: asyncio.Task[None]) -> None:
        await watch.close()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        if not task.done():
            task.cancel()
        self._open_watches.pop(record.id, None)
        with contextlib.suppress(ValueError):
            self._watch_objs.remove((watch, record, task))

    async def _watch_churn(self) -> None:
        rng = random.Random(f"{self.cfg.seed}-watch")
        while not self._stop.is_set():
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            i = rng.randrange(len(self._clients))
            choice = rng.random()
            if choice < 0.4:
                key, end = self.cfg.prefix, prefix_end(self.cfg.prefix).decode()
            elif choice < 0.8:
                key, end = rng.choice(self.keys), ""
            else:
                a, b = sorted(rng.sample(self.keys, 2))
                key, end = a, b
            if rng.random() < 0.3:
                start = 0
            else:
                start = rng.randint(max(self._compacted + 1, self._revision - 40), self._revision + 1)
            try:
                await self._open_watch(self._clients[i], i, key, end, start, progress=rng.random() < 0.5,
                                       long_lived=False, prev_kv=rng.random() < 0.5)
            except EtcdError as exc:
                self.errors.append(f"watch churn: {exc!r}")
            # Close the oldest short watches, keeping a few open.
            short = [(w, r, t) for (w, r, t) in self._watch_objs if r.id < 1000]
            while len(short) > 3:
                w, r, t = short.pop(0)
                await self._close_watch(w, r, t)

    async def _request_progress(self, clients: list[Client]) -> None:
        if not self.cfg.request_progress:
            return
        for client in clients:
            with contextlib.suppress(EtcdError):
                await client.request_progress()

    async def _progress_requests(self) -> None:
        rng = random.Random(f"{self.cfg.seed}-progress")
        while not self._stop.is_set():
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await self._request_progress([*self._watch_clients, *self._clients])

    # -- after the run ------------------------------------------------------------------------------------
    async def final_observations(self, client: Client) -> None:
        """Record the final state (a linearizable list, also checked) and every lease's TTL."""
        op = await self.record(
            -1, "range",
            {"key": self.cfg.prefix, "range_end": prefix_end(self.cfg.prefix).decode(), "serializable": False},
            lambda: client.get_prefix(self.cfg.prefix, timeout=30),
            _range_result, mutation=False,
        )
        if op.status == OK:
            self.history.final["keys"] = {kv["key"]: kv["lease"] for kv in op.result["kvs"]}
            self.history.final["revision"] = op.result["revision"]
        for lease in self._all_leases:
            try:
                r = await client.lease_time_to_live(lease.record.lease_id, timeout=10)
                lease.record.final_ttl = r.TTL
            except EtcdError as exc:
                self.errors.append(f"final TTL of lease {lease.record.lease_id:x}: {exc!r}")
