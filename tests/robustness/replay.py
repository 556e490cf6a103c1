"""The revision history reconstructed from the watch streams, and the checks that need it.

Every watch stream that covers the traffic's whole key prefix delivers, for
every revision it covers, the events of that revision. Their union is the
**reference**: revision -> events, plus the earliest time any client
received it. The watch checks (:mod:`.watch_checks`) compare every stream
against it; this module uses it to check:

* **no acknowledged write lost** — every put, successful CAS and delete that
  returned revision R appears in the reference at R;
* **no phantom or duplicated write** — every value in the reference was
  written by exactly one call that may have taken effect, exactly once, at
  the revision that call reported;
* **reads match a revision** — every read (linearizable or serializable)
  returned exactly the state the reference gives at the revision of its
  response header (so ranges are atomic snapshots), or at the revision it
  asked for (historical reads); limited ranges return the first keys, and
  ``count``/``more`` agree; a historical read is refused as compacted only
  after a compaction that far was sent;
* **no gaps** — every revision in the covered span has events (etcd never
  creates a revision without one).

It also resolves unknown outcomes for the linearizability checker, as etcd's
robustness suite does: a write whose value shows up at revision R took
effect (at R, before the first client saw R); one whose value never shows up
while the reference covers the whole run did not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.robustness.history import (
    FAILED,
    OK,
    UNKNOWN,
    History,
    Operation,
    WatchEvent,
    WatchRecord,
)


@dataclass
class Reference:
    """Revision -> events (in stream order), as the streams covering the whole prefix delivered them."""

    prefix: str
    prefix_end: str
    events: dict[int, list[WatchEvent]] = field(default_factory=dict)
    first_seen: dict[int, float] = field(default_factory=dict)
    covered: list[tuple[int, int]] = field(default_factory=list)
    """Maximal revision spans ``[lo, hi]`` some whole-prefix stream is complete over."""
    conflicts: list[str] = field(default_factory=list)

    def is_covered(self, revision: int) -> bool:
        """Whether some whole-prefix stream is complete at ``revision``."""
        return any(lo <= revision <= hi for lo, hi in self.covered)

    @property
    def complete_from_start(self) -> int:
        """The highest revision R such that revisions 1..R are all covered (1: none beyond the empty store)."""
        reach = 1  # revision 1 is the empty store: nothing to deliver
        for lo, hi in self.covered:
            if lo > reach + 1:
                break
            reach = max(reach, hi)
        return reach

    def writes_by_tag(self) -> dict[str, list[tuple[int, WatchEvent]]]:
        """Value tag -> every (revision, put event) carrying it."""
        out: dict[str, list[tuple[int, WatchEvent]]] = {}
        for rev, events in self.events.items():
            for e in events:
                if e.type == "put" and e.value is not None:
                    out.setdefault(e.value, []).append((rev, e))
        return out


def _whole_prefix(w: WatchRecord, prefix: str, prefix_end: str) -> bool:
    return w.key <= prefix and (w.range_end == "\0" or w.range_end >= prefix_end)


def event_key(e: WatchEvent) -> tuple[Any, ...]:
    """What identifies an event when streams are compared."""
    return (e.type, e.key, e.mod, e.create, e.version, e.value, e.lease)


def build_reference(history: History) -> Reference:
    """Merge the whole-prefix watch streams into the reference; disagreements become conflicts."""
    prefix = history.meta.get("prefix", "")
    prefix_end = history.meta.get("prefix_end", "\0")
    ref = Reference(prefix, prefix_end)
    spans: list[tuple[int, int]] = []
    for w in history.watches:
        if not _whole_prefix(w, prefix, prefix_end):
            continue
        per_rev: dict[int, list[WatchEvent]] = {}
        rev_time: dict[int, float] = {}
        for b in w.batches:
            for e in b.events:
                per_rev.setdefault(e.mod, []).append(e)
                rev_time.setdefault(e.mod, b.time)
        for rev, events in per_rev.items():
            mine = [e for e in events if prefix <= e.key and (prefix_end == "\0" or e.key < prefix_end)]
            if rev not in ref.events:
                ref.events[rev] = mine
            elif [event_key(e) for e in ref.events[rev]] != [event_key(e) for e in mine]:
                ref.conflicts.append(
                    f"watch {w.id} delivered {[event_key(e) for e in mine]} at revision {rev}, "
                    f"another delivered {[event_key(e) for e in ref.events[rev]]}"
                )
            ref.first_seen[rev] = min(ref.first_seen.get(rev, math.inf), rev_time[rev])
        if w.last_revision >= w.first_revision:
            spans.append((w.first_revision, w.last_revision))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    ref.covered = merged
    return ref


@dataclass
class KeyState:
    """One key in the replayed store."""

    value: str | None
    mod: int
    create: int
    version: int
    lease: int


def states_at(ref: Reference, revisions: Iterable[int]) -> dict[int, dict[str, KeyState]]:
    """The replayed key space at each requested revision (replaying from revision 1)."""
    wanted = sorted(set(revisions))
    out: dict[int, dict[str, KeyState]] = {}
    store: dict[str, KeyState] = {}
    rev = 0
    for target in wanted:
        while rev < target:
            rev += 1
            for e in ref.events.get(rev, []):
                if e.type == "put":
                    store[e.key] = KeyState(e.value, e.mod, e.create, e.version, e.lease)
                else:
                    store.pop(e.key, None)
        out[target] = dict(store)
    return out


def _in_range(key: str, start: str, end: str) -> bool:
    if not end:
        return key == start
    if end == "\0":
        return key >= start
    return start <= key < end


@dataclass
class ReplayResult:
    """Violations found against the reference (empty lists: all good)."""

    lost_writes: list[str] = field(default_factory=list)
    phantom_writes: list[str] = field(default_factory=list)
    bad_reads: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    checked_writes: int = 0
    checked_reads: int = 0

    @property
    def ok(self) -> bool:
        """Whether no violation was found."""
        return not (self.lost_writes or self.phantom_writes or self.bad_reads or self.gaps or self.conflicts)

    def report(self) -> str:
        """The violations, grouped, at most 20 of each."""
        lines: list[str] = []
        for title, items in (
            ("acknowledged write lost", self.lost_writes),
            ("phantom or duplicated write", self.phantom_writes),
            ("read does not match its revision", self.bad_reads),
            ("revision without events", self.gaps),
            ("watch streams disagree", self.conflicts),
        ):
            for item in items[:20]:
                lines.append(f"{title}: {item}")
            if len(items) > 20:
                lines.append(f"{title}: ... and {len(items) - 20} more")
        return "\n".join(lines)


def check_replay(history: History, ref: Reference | None = None) -> ReplayResult:
    """Every check of the module docstring against the reference built from ``history``."""
    ref = ref if ref is not None else build_reference(history)
    result = ReplayResult(conflicts=list(ref.conflicts))
    for lo, hi in ref.covered:
        for rev in range(max(lo, 2), hi + 1):
            if not ref.events.get(rev):
                result.gaps.append(f"revision {rev} (covered by a whole-prefix watch) has no event")
    _check_writes(history, ref, result)
    _check_reads(history, ref, result)
    return result


def _check_writes(history: History, ref: Reference, result: ReplayResult) -> None:
    by_tag = ref.writes_by_tag()
    writers: dict[str, list[Any]] = {}
    for op in history.operations:
        if op.kind in ("put", "txn"):
            writers.setdefault(op.args["value"], []).append(op)
    for op in history.operations:
        if op.status != OK:
            continue
        rev = op.result.get("revision", 0)
        if op.kind == "put" or (op.kind == "txn" and op.result.get("succeeded")):
            if not ref.is_covered(rev):
                continue
            result.checked_writes += 1
            got = [e for e in ref.events.get(rev, []) if e.key == op.args["key"]]
            if not any(e.type == "put" and e.value == op.args["value"] for e in got):
                result.lost_writes.append(
                    f"{op.describe()}: revision {rev} holds {[event_key(e) for e in got] or 'nothing'} for the key"
                )
        elif op.kind == "delete" and op.result.get("deleted"):
            if not ref.is_covered(rev):
                continue
            result.checked_writes += 1
            got = [e for e in ref.events.get(rev, []) if e.key == op.args["key"]]
            if not any(e.type == "delete" for e in got):
                result.lost_writes.append(f"{op.describe()}: no delete of the key at revision {rev}")
    for tag, seen in by_tag.items():
        ops = writers.get(tag, [])
        if len(seen) > 1:
            result.phantom_writes.append(f"value {tag!r} written {len(seen)} times, at revisions {[r for r, _ in seen]}")
        if not ops:
            result.phantom_writes.append(f"value {tag!r} at revision {seen[0][0]} was never written by a client")
            continue
        op = ops[0]
        if op.status == FAILED:
            result.phantom_writes.append(f"{op.describe()}: refused, yet its value is at revision {seen[0][0]}")
        elif op.status == OK:
            if op.kind == "txn" and not op.result.get("succeeded"):
                result.phantom_writes.append(f"{op.describe()}: compare failed, yet its value is at revision {seen[0][0]}")
            elif op.result.get("revision") != seen[0][0]:
                result.phantom_writes.append(
                    f"{op.describe()}: acknowledged at revision {op.result.get('revision')}, "
                    f"its value is at revision {seen[0][0]}"
                )
        for rev, e in seen:
            if e.key != op.args["key"]:
                result.phantom_writes.append(f"value {tag!r} of key {op.args['key']!r} showed up under {e.key!r} at {rev}")


def _check_reads(history: History, ref: Reference, result: ReplayResult) -> None:
    """Reads (current or historical, limited or not) against the reference state at their revision."""

    def at(op: Operation) -> int:
        return int(op.args.get("revision") or op.result["revision"])

    reads = [
        op for op in history.operations
        if op.kind in ("get", "range") and op.status == OK and (ref.is_covered(at(op)) or at(op) <= 1)
    ]
    states = states_at(ref, (at(op) for op in reads))
    for op in reads:
        rev = at(op)
        start, end = op.args["key"], op.args.get("range_end", "")
        expected = sorted(
            (k, s.value, s.mod, s.create, s.version, s.lease)
            for k, s in states[rev].items() if _in_range(k, start, end)
        )
        got = [(kv["key"], kv["value"], kv["mod"], kv["create"], kv["version"], kv["lease"]) for kv in op.result["kvs"]]
        result.checked_reads += 1
        limit = op.args.get("limit") or 0
        problems = []
        if limit:
            if got != expected[:limit]:
                problems.append(f"the first {limit} keys at revision {rev} are {expected[:limit]}")
            if op.result.get("more") is not None and op.result["more"] != (len(expected) > limit):
                problems.append(f"more={op.result['more']} but revision {rev} has {len(expected)} keys")
        elif sorted(got) != expected:
            problems.append(f"the state at revision {rev} is {expected}")
        if op.result.get("count") is not None and op.result["count"] != len(expected):
            problems.append(f"count={op.result['count']} but revision {rev} has {len(expected)} keys in range")
        if problems:
            result.bad_reads.append(f"{op.describe()}: " + "; ".join(problems))
    _check_refused_history_reads(history, result)


def _check_refused_history_reads(history: History, result: ReplayResult) -> None:
    """A read at revision R may be refused as compacted only after a compaction to >= R was sent,
    and a linearizable one as a future revision only if no one had been told of R yet."""
    compactions = [op for op in history.operations if op.kind == "compact" and op.status in (OK, UNKNOWN)]
    acked = sorted(
        (op.ret, int(op.result.get("revision", 0)))
        for op in history.operations if op.status == OK and op.ret is not None
    )
    for op in history.operations:
        revision = op.args.get("revision") if op.kind == "get" else None
        if not revision or op.status != FAILED:
            continue
        if "CompactedError" in op.error:
            if not any(c.args["revision"] >= revision and c.call <= op.return_time for c in compactions):
                result.bad_reads.append(f"{op.describe()}: no compaction up to {revision} had been sent")
        elif "FutureRevisionError" in op.error and not op.args.get("serializable"):
            known = max((rev for ret, rev in acked if ret < op.call), default=0)
            if revision <= known:
                result.bad_reads.append(
                    f"{op.describe()}: a linearizable read of revision {revision}, refused as a future "
                    f"revision after revision {known} had been acknowledged"
                )


def resolve_unknown(history: History, ref: Reference) -> History:
    """A copy of ``history`` where unknown-outcome writes are settled by the reference.

    A put or CAS whose unique value appears at revision R took effect: it gets
    revision R and returns when the first client saw R. One whose value never
    appears, while the reference covers every revision of the run, did not
    take effect (a CAS then at most failed its compare, which changes nothing).
    Deletes and lease revokes stay unknown.
    """
    by_tag = ref.writes_by_tag()
    complete = ref.complete_from_start >= max(history.meta.get("final_revision", 0), 1)
    ops = []
    for op in history.operations:
        if op.status != UNKNOWN or op.kind not in ("put", "txn"):
            ops.append(op)
            continue
        seen = by_tag.get(op.args["value"])
        if seen:
            rev, _ = seen[0]
            result: dict[str, Any] = {"revision": rev}
            if op.kind == "txn":
                result.update(succeeded=True, kvs=[])
            ret = ref.first_seen.get(rev, math.inf)
            if ret < op.call:
                ops.append(op)  # seen before it was sent: let the checkers report the impossibility
                continue
            ops.append(
                type(op)(**{**op.__dict__, "status": OK, "ret": ret, "result": result,
                            "error": op.error + " (resolved by watch)"})
            )
        elif not complete:
            ops.append(op)
        # else: never took effect; dropped
    return History(history.meta, ops, history.watches, history.leases, history.faults, history.final)
