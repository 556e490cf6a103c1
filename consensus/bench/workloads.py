"""The benchmark's requests: etcd v3 messages serialized once, before the clock starts.

A closed-loop workload (:class:`UnaryWorkload`) hands out ``(body, context)``
for the next call and judges the raw reply; bodies come from a table built
up front (keys are the only thing that varies), so the timed loop does no
protobuf work except where a workload must read the reply (compare-and-set).

Keys are ASCII, zero-padded decimal numbers ``key_size`` bytes long
(``00000042``); values are ``val_size`` random bytes chosen once per run.
etcd's benchmark tool uses binary keys; decimal ones print readably in
``etcdctl get`` and sort the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb

KV_RANGE = "/etcdserverpb.KV/Range"
KV_PUT = "/etcdserverpb.KV/Put"
KV_TXN = "/etcdserverpb.KV/Txn"
KV_DELETE_RANGE = "/etcdserverpb.KV/DeleteRange"
WATCH = "/etcdserverpb.Watch/Watch"
LEASE_GRANT = "/etcdserverpb.Lease/LeaseGrant"
LEASE_REVOKE = "/etcdserverpb.Lease/LeaseRevoke"
LEASE_KEEPALIVE = "/etcdserverpb.Lease/LeaseKeepAlive"

TABLE_LIMIT = 1 << 16
"""Key spaces up to this size get every request body built up front; larger ones cycle a sample."""

WORKLOADS = ("put", "range", "txn-put", "cas", "watch-latency", "lease-keepalive")


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How keys and values are chosen: sizes, key space, order and the random seed."""

    key_size: int = 8
    val_size: int = 8
    key_space_size: int = 1
    sequential: bool = False
    seed: int = 1

    def key(self, n: int) -> bytes:
        """Key number ``n``: ``key_size`` ASCII digits."""
        text = str(n).zfill(self.key_size)
        if len(text) > self.key_size:
            raise ValueError(
                f"--key-size {self.key_size} is too small for --key-space-size {self.key_space_size}"
            )
        return text.encode()

    def value(self) -> bytes:
        """The run's value: ``val_size`` random bytes from the seed."""
        return random.Random(self.seed).randbytes(self.val_size)

    def validate(self) -> None:
        """Raise ValueError if the sizes cannot express the key space."""
        if self.key_space_size < 1:
            raise ValueError("--key-space-size must be at least 1")
        if self.key_size < 1:
            raise ValueError("--key-size must be at least 1")
        self.key(self.key_space_size - 1)


class KeyChooser:
    """Key numbers in order (``--sequential-keys``) or uniformly at random, as fast as possible."""

    __slots__ = ("_next", "_random", "_size", "sequential")

    def __init__(self, spec: KeySpec, offset: int = 0) -> None:
        self.sequential = spec.sequential
        self._size = spec.key_space_size
        self._next = offset % self._size
        self._random = random.Random(spec.seed * 7919 + offset).randrange

    def __call__(self) -> int:
        if self.sequential:
            n = self._next
            self._next = n + 1 if n + 1 < self._size else 0
            return n
        return self._random(self._size)


class UnaryWorkload:
    """A closed-loop workload: one gRPC method, a request per call, an optional reply check."""

    name = "unary"
    path = KV_PUT

    def __init__(self, spec: KeySpec, offset: int = 0) -> None:
        self.spec = spec
        self.choose = KeyChooser(spec, offset)
        size = min(spec.key_space_size, TABLE_LIMIT)
        if spec.key_space_size <= TABLE_LIMIT:
            numbers = list(range(size))
        else:
            rng = random.Random(spec.seed + offset)
            numbers = [rng.randrange(spec.key_space_size) for _ in range(size)]
        self._table = [self.build(spec.key(n)) for n in numbers]
        self._direct = spec.key_space_size <= TABLE_LIMIT

    def build(self, key: bytes) -> bytes:
        """The serialized request for ``key``."""
        raise NotImplementedError

    def request(self) -> tuple[bytes, Any]:
        """``(body, context)`` of the next call; ``context`` comes back to :meth:`reply`."""
        n = self.choose()
        if self._direct:
            return self._table[n], None
        return self._table[n % len(self._table)], None

    def reply(self, context: Any, payload: bytes) -> str | None:
        """Judge a successful call's reply: None when fine, else an error text."""
        return None

    def extra(self) -> dict[str, Any]:
        """Workload-specific counters for the report."""
        return {}


class PutWorkload(UnaryWorkload):
    """``Put(key, value)``: etcd benchmark's ``put``."""

    name = "put"
    path = KV_PUT

    def __init__(self, spec: KeySpec, offset: int = 0) -> None:
        self._value = spec.value()
        super().__init__(spec, offset)

    def build(self, key: bytes) -> bytes:
        return bytes(pb.PutRequest(key=key, value=self._value).SerializeToString())


class RangeWorkload(UnaryWorkload):
    """``Range(key)``, linearizable (``l``) or serializable (``s``): etcd benchmark's ``range``."""

    name = "range"
    path = KV_RANGE

    def __init__(self, spec: KeySpec, offset: int = 0, consistency: str = "l") -> None:
        if consistency not in ("l", "s"):
            raise ValueError("--consistency must be 'l' or 's'")
        self._serializable = consistency == "s"
        super().__init__(spec, offset)

    def build(self, key: bytes) -> bytes:
        return bytes(pb.RangeRequest(key=key, serializable=self._serializable).SerializeToString())


class TxnPutWorkload(UnaryWorkload):
    """A txn with no compares and ``txn_ops`` puts on consecutive keys: etcd benchmark's ``txn-put``."""

    name = "txn-put"
    path = KV_TXN

    def __init__(self, spec: KeySpec, offset: int = 0, txn_ops: int = 1) -> None:
        if txn_ops < 1:
            raise ValueError("--txn-ops must be at least 1")
        self._ops = txn_ops
        self._value = spec.value()
        super().__init__(spec, offset)

    def build(self, key: bytes) -> bytes:
        n = int(key)
        keys = [self.spec.key((n + i) % self.spec.key_space_size) for i in range(self._ops)]
        txn = pb.TxnRequest(
            success=[pb.RequestOp(request_put=pb.PutRequest(key=k, value=self._value)) for k in keys]
        )
        return bytes(txn.SerializeToString())


class CasWorkload(UnaryWorkload):
    """Optimistic compare-and-set on a hot key set: ``Txn(mod_revision(k) == known) put else get``.

    Every client shares one cache of the last mod revision seen per key. A
    call that loses the race is not an error: its failure branch returns the
    key's current revision, so the next attempt on that key can win. The
    report counts ``swapped`` (the put happened) and ``conflicts``.
    """

    name = "cas"
    path = KV_TXN

    def __init__(self, spec: KeySpec, offset: int = 0) -> None:
        self._value = spec.value()
        self._known: dict[int, int] = {}
        self._keys = [spec.key(n) for n in range(min(spec.key_space_size, TABLE_LIMIT))]
        self.swapped = 0
        self.conflicts = 0
        super().__init__(spec, offset)

    def build(self, key: bytes) -> bytes:
        return b""  # built per call: the compared revision changes

    def request(self) -> tuple[bytes, Any]:
        n = self.choose() % len(self._keys)
        key = self._keys[n]
        txn = pb.TxnRequest(
            compare=[
                pb.Compare(
                    key=key,
                    target=pb.Compare.MOD,
                    result=pb.Compare.EQUAL,
                    mod_revision=self._known.get(n, 0),
                )
            ],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=self._value))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key))],
        )
        return txn.SerializeToString(), n

    def reply(self, context: Any, payload: bytes) -> str | None:
        n: int = context
        response = pb.TxnResponse.FromString(payload)
        if response.succeeded:
            self.swapped += 1
            self._known[n] = response.header.revision
        else:
            self.conflicts += 1
            kvs = response.responses[0].response_range.kvs if response.responses else ()
            self._known[n] = kvs[0].mod_revision if kvs else 0
        return None

    def extra(self) -> dict[str, Any]:
        return {"swapped": self.swapped, "conflicts": self.conflicts}


def unary_workload(
    name: str, spec: KeySpec, offset: int, *, consistency: str = "l", txn_ops: int = 1
) -> UnaryWorkload:
    """The closed-loop workload called ``name``."""
    factories: dict[str, Callable[[], UnaryWorkload]] = {
        "put": lambda: PutWorkload(spec, offset),
        "range": lambda: RangeWorkload(spec, offset, consistency),
        "txn-put": lambda: TxnPutWorkload(spec, offset, txn_ops),
        "cas": lambda: CasWorkload(spec, offset),
    }
    if name not in factories:
        raise ValueError(f"{name!r} is not a closed-loop workload")
    return factories[name]()


def watch_prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key under ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def watch_create(prefix: bytes) -> bytes:
    """A WatchRequest creating a watcher on every key under ``prefix``."""
    create = pb.WatchCreateRequest(key=prefix, range_end=watch_prefix_end(prefix))
    return bytes(pb.WatchRequest(create_request=create).SerializeToString())


def watch_put(prefix: bytes, seq: int, value: bytes) -> bytes:
    """The writer's put number ``seq`` of the watch-latency workload."""
    return bytes(pb.PutRequest(key=prefix + b"%010d" % seq, value=value).SerializeToString())


def lease_grant(ttl: int) -> bytes:
    """A serialized LeaseGrantRequest for ``ttl`` seconds (the server picks the id)."""
    return bytes(pb.LeaseGrantRequest(TTL=ttl).SerializeToString())


def lease_keepalive(lease_id: int) -> bytes:
    """A serialized LeaseKeepAliveRequest for ``lease_id``."""
    return bytes(pb.LeaseKeepAliveRequest(ID=lease_id).SerializeToString())


def lease_revoke(lease_id: int) -> bytes:
    """A serialized LeaseRevokeRequest for ``lease_id``."""
    return bytes(pb.LeaseRevokeRequest(ID=lease_id).SerializeToString())
