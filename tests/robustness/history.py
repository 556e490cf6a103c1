"""The recorded history of one robustness run, and its JSON form (saved for replay).

A history is what the checkers judge, so it holds exactly what the clients
observed and nothing the cluster could not have told them:

* :class:`Operation` — one call: what was asked (``args``), the monotonic
  invoke time, the return time (``None`` when the outcome is unknown: the
  call raised ``UncertainResultError`` or timed out, so it may or may not have
  taken effect, and counts as returning at infinity), and the observed result;
* :class:`WatchRecord` — one watch: its range and start revision and every
  batch delivered (events and progress notifications), in delivery order;
* :class:`LeaseRecord` — one granted lease: its TTL, whether it was kept
  alive, whether the keep-alive ever reported it lost, and its final TTL.

Values written by the traffic are unique: ``tag|xxxx...`` where the tag names
the writing operation, so a value read back identifies the write it came
from (:func:`make_value`, :func:`parse_value`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OK = "ok"
"""The call returned a result: it took effect (mutation) or observed the state (read)."""
FAILED = "failed"
"""The call was refused in a way that proves it had no effect."""
UNKNOWN = "unknown"
"""The outcome is unknown: a mutation may or may not have taken effect (infinite return time)."""

READ_KINDS = frozenset({"get", "range"})
"""Operations that never change the state."""


def make_value(tag: str, size: int) -> bytes:
    """The unique value a write with ``tag`` stores: the tag, ``|``, then padding to ``size`` bytes."""
    head = tag.encode() + b"|"
    return head + b"x" * max(0, size - len(head))


def parse_value(value: bytes) -> str:
    """The tag of a value written by :func:`make_value`, or ``!corrupt:<digest>`` for anything else."""
    tag, sep, pad = value.partition(b"|")
    if sep and pad.count(b"x") == len(pad):
        try:
            return tag.decode()
        except UnicodeDecodeError:
            pass
    return "!corrupt:" + hashlib.sha1(value).hexdigest()[:12]


def key_str(key: bytes) -> str:
    """A key as text (the traffic uses ASCII keys; anything else stays visible, escaped)."""
    return key.decode("utf-8", "backslashreplace")


@dataclass
class Operation:
    """One client call: request, invoke/return times (monotonic seconds) and outcome.

    ``kind`` is one of ``get`` (one key; ``args.serializable``), ``range`` (a
    prefix), ``put``, ``delete``, ``txn`` (compare-and-set on one key),
    ``lease_grant``, ``lease_revoke``, ``compact``, ``defragment``.
    ``result`` for reads holds ``kvs`` (list of :func:`kv_dict`) and
    ``revision`` (the response header's); for writes ``revision`` and what the
    kind returns (``deleted``, ``succeeded`` and the failure branch's ``kvs``).
    """

    id: int
    client: int
    kind: str
    call: float
    ret: float | None
    args: dict[str, Any]
    status: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    endpoint: str = ""

    @property
    def return_time(self) -> float:
        """The return time, infinity when the outcome is unknown."""
        return math.inf if self.ret is None else self.ret

    def describe(self) -> str:
        """One line for failure reports: times, call, outcome."""
        ret = "∞" if self.ret is None else f"{self.ret:.4f}"
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        if self.status == OK:
            outcome = json.dumps(self.result, sort_keys=True)
        elif self.status == UNKNOWN:
            outcome = f"UNKNOWN ({self.error})"
        else:
            outcome = f"FAILED ({self.error})"
        return f"#{self.id} c{self.client} [{self.call:.4f}, {ret}] {self.kind}({args}) -> {outcome}"


def kv_dict(kv: Any) -> dict[str, Any]:
    """The JSON form of an ``mvccpb.KeyValue`` (the value by its tag)."""
    return {
        "key": key_str(kv.key),
        "value": parse_value(kv.value),
        "mod": kv.mod_revision,
        "create": kv.create_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


@dataclass
class WatchEvent:
    """One event of a watch stream (``type`` is ``put`` or ``delete``; deletes carry no value)."""

    type: str
    key: str
    mod: int
    create: int = 0
    version: int = 0
    value: str | None = None
    lease: int = 0
    prev: list[Any] | None = None
    """With ``prev_kv``: the key before this event, ``[value, mod, create, version, lease]`` (None: absent)."""


@dataclass
class WatchBatch:
    """One delivered ``WatchResponse``: events of whole revisions, or a progress notification."""

    time: float
    revision: int
    events: list[WatchEvent] = field(default_factory=list)

    @property
    def is_progress(self) -> bool:
        """Whether this batch is a progress notification (no events)."""
        return not self.events


@dataclass
class WatchRecord:
    """One watch as a client saw it, from creation to its end."""

    id: int
    client: int
    key: str
    range_end: str
    start_revision: int
    created_revision: int = 0
    batches: list[WatchBatch] = field(default_factory=list)
    error: str = ""
    resumes: list[int] = field(default_factory=list)
    prev_kv: bool = False
    started: float = 0.0
    ended: float | None = None

    def covers(self, key: str) -> bool:
        """Whether ``key`` is in the watched range (``range_end`` ``\\0`` means every key >= key)."""
        if not self.range_end:
            return key == self.key
        if self.range_end == "\0":
            return key >= self.key
        return self.key <= key < self.range_end

    @property
    def first_revision(self) -> int:
        """The first revision this watch is complete from."""
        return self.start_revision if self.start_revision else self.created_revision + 1

    @property
    def last_revision(self) -> int:
        """The highest revision up to which the stream is known complete (events or progress)."""
        best = self.first_revision - 1
        for b in self.batches:
            best = max(best, b.revision if b.is_progress else b.events[-1].mod)
        return best


@dataclass
class LeaseRecord:
    """One lease the traffic granted, and what became of it."""

    lease_id: int
    ttl: int
    keep_alive: bool
    granted_at: float
    grant_op: int
    lost: bool = False
    lost_reason: str = ""
    lost_at: float | None = None
    revoke_ops: list[int] = field(default_factory=list)
    lapsed: bool = False
    """The client-side keep-alive missed the last known expiry (the server may then expire it)."""
    lapsed_at: float | None = None
    final_ttl: int | None = None
    """TTL from a LeaseTimeToLive after the run (-1: gone); None when not asked."""


@dataclass
class History:
    """Everything one run recorded: metadata (seed, fault schedule), calls, watches, leases, faults."""

    meta: dict[str, Any] = field(default_factory=dict)
    operations: list[Operation] = field(default_factory=list)
    watches: list[WatchRecord] = field(default_factory=list)
    leases: list[LeaseRecord] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The history as plain JSON data."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        """Rebuild a history from :meth:`to_json` data."""
        watches = []
        for w in data.get("watches", []):
            batches = [
                WatchBatch(b["time"], b["revision"], [WatchEvent(**e) for e in b["events"]])
                for b in w.pop("batches", [])
            ]
            watches.append(WatchRecord(**w, batches=batches))
        return cls(
            meta=data.get("meta", {}),
            operations=[Operation(**o) for o in data.get("operations", [])],
            watches=watches,
            leases=[LeaseRecord(**lr) for lr in data.get("leases", [])],
            faults=data.get("faults", []),
            final=data.get("final", {}),
        )

    def save(self, path: Path) -> Path:
        """Write the history as JSON to ``path``; returns ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=None, separators=(",", ":")))
        return path

    @classmethod
    def load(cls, path: Path) -> History:
        """Read a history saved by :meth:`save`."""
        return cls.from_json(json.loads(path.read_text()))

    def op(self, op_id: int) -> Operation:
        """The operation with id ``op_id``."""
        for o in self.operations:
            if o.id == op_id:
                return o
        raise KeyError(op_id)
