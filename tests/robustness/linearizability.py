"""A linearizability checker for the key-value history: Wing-Gong search, Porcupine-style.

The model is one register per key (P-compositionality: a history is
linearizable iff its projection on every key is, because every operation
the checker models touches one key, or is projected key by key):

* state: ``(value tag or None, revision of the last change or -1 if unknown,
  version, lease)``;
* ``read`` (a linearizable get, or one key of a linearizable range list),
  ``put``, ``delete``, ``cas`` (a txn comparing the key's mod revision,
  value or version, putting on success and reading on failure), ``revoke``
  (a lease revoke, or a lease that may expire: keys attached to the lease
  are deleted).

Operations whose outcome is unknown get an infinite return time: the search
may linearize them anywhere after their invocation or not at all (placing
them after everything is the same as never applying them). Their effect is
still deterministic given the state, except that an unknown put leaves the
key's revision unknown; a later read refines it. The model is therefore
nondeterministic in a few cases and the search works on *sets* of states, as
Porcupine does for nondeterministic models.

The search (``_linearizable``) is Wing & Gong's with Lowe's memoisation: the
call and return events of a partition form a doubly linked list; the search
linearizes the earliest call it can, lifts it out of the list, and
backtracks when it reaches a return whose call is not linearized yet. A
cache of (set of linearized operations, states) reached prunes repeated work.

On failure, :func:`check_history` minimises the key's history into a small
witness (:func:`minimise`): it cuts the history at the earliest invocation
time from which it is not linearizable (ops still running then become
unknown-outcome), removes read-only operations and forgets the outcomes of
writes as long as the history stays non-linearizable -- steps that only ever
*allow more* behaviours, so the operations left with known outcomes cannot
be explained together -- and finally drops writes that no remaining
observation can depend on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tests.robustness.history import OK, UNKNOWN, History, Operation

State = tuple[str | None, int, int, int]
"""(value tag or None, revision of the last change (-1: unknown), version, lease)."""

INITIAL: State = (None, 0, 0, 0)
UNKNOWN_REV = -1

Read = tuple[str | None, int, int | None]
"""What a read observed of one key: (value tag or None, mod revision, version); absent: (None, 0, 0).

A version of None is not checked (the minimiser forgets versions)."""


@dataclass(frozen=True)
class KeyOp:
    """One operation projected on one key, as the model steps it.

    ``out`` is None when the outcome is unknown (then ``ret`` is infinity).
    ``arg`` by kind: read ``()``; put ``(tag, lease)``; delete ``()``;
    cas ``(target, operand, tag, lease)``; revoke ``(lease,)``.
    ``out`` by kind: read :data:`Read`; put ``(revision,)``; delete
    ``(deleted, revision)``; cas ``(succeeded, revision, Read or None)``;
    revoke ``(revision,)``.
    """

    op_id: int
    call: float
    ret: float
    kind: str
    arg: tuple[Any, ...] = ()
    out: tuple[Any, ...] | None = None

    @property
    def read_only(self) -> bool:
        """Whether this op cannot change the state as recorded (so dropping it only allows more)."""
        if self.kind == "read":
            return True
        if self.kind == "cas" and self.out is not None and not self.out[0]:
            return True
        return self.kind == "delete" and self.out is not None and self.out[0] == 0

    def relaxed(self) -> KeyOp:
        """The same op with its outcome forgotten (it may or may not take effect)."""
        return replace(self, ret=math.inf, out=None)


def _mod(state: State) -> int:
    """The mod revision etcd compares against: 0 for an absent key."""
    return 0 if state[0] is None else state[1]


def _matches_read(state: State, read: Read) -> State | None:
    """``state`` refined by what a read saw, or None if the read is impossible in ``state``."""
    tag, mod, version = read
    if tag is None:
        return state if state[0] is None else None
    if state[0] != tag or (version is not None and state[2] != version):
        return None
    if state[1] == UNKNOWN_REV:
        return (state[0], mod, state[2], state[3])
    return state if state[1] == mod else None


def _newer(state: State, revision: int) -> bool:
    """Whether a change at ``revision`` may follow the state's last change (revisions only grow)."""
    return revision == UNKNOWN_REV or state[1] == UNKNOWN_REV or revision > state[1]


def step(state: State, op: KeyOp) -> list[State]:
    """Every state ``op`` can lead to from ``state`` given its observed outcome (empty: impossible)."""
    kind, out = op.kind, op.out
    if kind == "read":
        assert out is not None
        refined = _matches_read(state, out)
        return [] if refined is None else [refined]
    if kind == "put":
        tag, lease = op.arg
        rev = UNKNOWN_REV if out is None else out[0]
        if not _newer(state, rev):
            return []
        return [(tag, rev, state[2] + 1, lease)]
    if kind == "delete":
        if out is None:
            return [state] if state[0] is None else [(None, UNKNOWN_REV, 0, 0)]
        deleted, rev = out
        if deleted == 0:
            return [state] if state[0] is None else []
        if state[0] is None or not _newer(state, rev):
            return []
        return [(None, rev, 0, 0)]
    if kind == "revoke":
        (lease,) = op.arg
        if state[0] is not None and state[3] == lease:
            return [(None, UNKNOWN_REV, 0, 0)]
        return [state]
    if kind == "cas":
        return _step_cas(state, op)
    raise ValueError(f"unknown op kind {kind!r}")


def _compare_outcomes(state: State, target: str, operand: Any) -> list[tuple[bool, State]]:
    """The possible results of the txn's compare in ``state``, each with the refined state."""
    if target == "value":
        return [(state[0] == operand, state)]
    if target == "version":
        return [(state[2] == operand, state)]
    if target == "mod":
        if state[0] is not None and state[1] == UNKNOWN_REV:
            # The key holds a value whose revision we do not know: either way.
            return [(True, (state[0], operand, state[2], state[3])), (False, state)]
        return [(_mod(state) == operand, state)]
    raise ValueError(f"unknown compare target {target!r}")


def _step_cas(state: State, op: KeyOp) -> list[State]:
    target, operand, tag, lease = op.arg
    results: list[State] = []
    for holds, st in _compare_outcomes(state, target, operand):
        if op.out is None:
            results.append((tag, UNKNOWN_REV, st[2] + 1, lease) if holds else st)
            continue
        succeeded, rev, read = op.out
        if holds != succeeded:
            continue
        if succeeded:
            if _newer(st, rev):
                results.append((tag, rev, st[2] + 1, lease))
        else:
            refined = st if read is None else _matches_read(st, read)
            if refined is not None:
                results.append(refined)
    return list(dict.fromkeys(results))


# -- the search -------------------------------------------------------------------------------


class _Entry:
    """A call or return event in the search's doubly linked list."""

    __slots__ = ("is_call", "match", "next", "op", "prev", "time")

    def __init__(self, op: int, time: float, is_call: bool) -> None:
        self.op = op
        self.time = time
        self.is_call = is_call
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


class BudgetExceeded(Exception):
    """The search took more steps than allowed (the verdict is unknown)."""


def _linearizable(ops: Sequence[KeyOp], budget: int = 2_000_000) -> bool:
    """Whether ``ops`` (one key) is linearizable from the initial (absent) state."""
    if not ops:
        return True
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        events.append((op.ret, 1, i))
    # Calls before returns at equal times: such ops count as concurrent (the permissive choice).
    events.sort()
    head = _Entry(-1, -math.inf, False)
    prev = head
    calls: dict[int, _Entry] = {}
    for time, kind, i in events:
        node = _Entry(i, time, kind == 0)
        if kind == 0:
            calls[i] = node
        else:
            calls[i].match = node
        node.prev = prev
        prev.next = node
        prev = node

    def lift(call: _Entry) -> None:
        assert call.prev is not None and call.match is not None
        call.prev.next = call.next
        if call.next is not None:
            call.next.prev = call.prev
        ret = call.match
        assert ret.prev is not None
        ret.prev.next = ret.next
        if ret.next is not None:
            ret.next.prev = ret.prev

    def unlift(call: _Entry) -> None:
        ret = call.match
        assert ret is not None and ret.prev is not None and call.prev is not None
        ret.prev.next = ret
        if ret.next is not None:
            ret.next.prev = ret
        call.prev.next = call
        if call.next is not None:
            call.next.prev = call

    states: frozenset[State] = frozenset([INITIAL])
    linearized = 0
    cache: dict[int, set[frozenset[State]]] = {0: {states}}
    stack: list[tuple[_Entry, frozenset[State]]] = []
    entry: _Entry | None = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > budget:
            raise BudgetExceeded(f"more than {budget} search steps for {len(ops)} operations")
        assert entry is not None
        if entry.is_call:
            op = ops[entry.op]
            nxt: set[State] = set()
            for st in states:
                nxt.update(step(st, op))
            if nxt:
                new_states = frozenset(nxt)
                new_linearized = linearized | (1 << entry.op)
                seen = cache.setdefault(new_linearized, set())
                if new_states not in seen:
                    seen.add(new_states)
                    stack.append((entry, states))
                    states = new_states
                    linearized = new_linearized
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False
            call, states = stack.pop()
            linearized &= ~(1 << call.op)
            unlift(call)
            entry = call.next
    return True


def linearizable(ops: Sequence[KeyOp], budget: int = 2_000_000) -> bool:
    """Whether one key's projected operations are linearizable (see the module docstring)."""
    return _linearizable(ops, budget)


# -- minimisation --------------------------------------------------------------------------------


def cut(ops: Sequence[KeyOp], at: float) -> list[KeyOp]:
    """The history as it stood at time ``at``: ops invoked by then; those still running are unknown."""
    out = []
    for op in ops:
        if op.call > at or (op.kind == "read" and op.ret > at):
            continue  # not invoked yet, or a read that has not observed anything yet
        out.append(op if op.ret <= at else op.relaxed())
    return out


def minimise(ops: Sequence[KeyOp], budget: int = 200_000) -> list[KeyOp]:
    """A small non-linearizable sub-history of the non-linearizable ``ops`` (see module docstring).

    1. cut at the earliest invocation time from which the history fails;
    2. drop read-only operations (sound: fewer observations allow more);
    3. forget write outcomes (revision, deleted count, CAS result) that the
       violation does not need; the write still has to happen in its
       interval (sound, and it adds no concurrency to the search);
    4. if the violation does not depend on version counts: drop writes
       whose value no remaining observation mentions and that no remaining
       known delete could depend on, and -- when no observation says the key
       was absent -- deletes and lease revokes, while it still fails.

    Every check has a step budget; an undecided check keeps the operation.
    """
    calls = [*sorted({op.call for op in ops}), math.inf]
    lo, hi = 0, len(calls) - 1
    # Smallest index whose cut is not linearizable (the full history is not).
    while lo < hi:
        mid = (lo + hi) // 2
        if _safe_linearizable(cut(ops, calls[mid]), budget):
            lo = mid + 1
        else:
            hi = mid

    def failing(candidate: list[KeyOp]) -> bool:
        return not _safe_linearizable(candidate, budget)

    current = cut(ops, calls[lo])
    current = _reduce(current, lambda op: op.read_only, lambda op: None, failing)
    current = _reduce(
        current,
        lambda op: op.out is not None and not op.read_only,
        lambda op: replace(op, out=None),
        failing,
    )
    unversioned = [_unversioned(op) for op in current]
    if failing(unversioned):
        referenced = _referenced(unversioned)
        current = _reduce(
            unversioned,
            lambda op: op.kind in ("put", "cas") and op.out is None and not _mentions(op, referenced),
            lambda op: None,
            failing,
        )
        if not any(_observes_absence(op) for op in current):
            # Fewer deletes only make the key present more often: harmless to every observation left.
            current = _reduce(
                current, lambda op: op.kind in ("delete", "revoke") and op.out is None, lambda op: None, failing
            )
    return current


def _observes_absence(op: KeyOp) -> bool:
    """Whether a known outcome says the key was absent (a read of nothing, a delete of nothing, ...)."""
    if op.out is None:
        return False
    if op.kind == "read":
        return op.out[0] is None
    if op.kind == "delete":
        return bool(op.out[0] == 0)
    if op.kind == "cas":
        target, operand = op.arg[0], op.arg[1]
        absent_compare = target in ("mod", "version") and operand == 0
        return bool(absent_compare and op.out[0]) or (op.out[2] is not None and op.out[2][0] is None)
    return False


def _unversioned(op: KeyOp) -> KeyOp:
    """``op`` with the version it observed forgotten (a read then checks value and revision only)."""
    if op.out is None:
        return op
    if op.kind == "read":
        tag, mod, _ = op.out
        return replace(op, out=(tag, mod, None))
    if op.kind == "cas" and op.out[2] is not None:
        tag, mod, _ = op.out[2]
        return replace(op, out=(op.out[0], op.out[1], (tag, mod, None)))
    return op


def _referenced(ops: Sequence[KeyOp]) -> tuple[set[str], set[int], float]:
    """Values and revisions that known outcomes mention, and the last return of a known delete."""
    tags: set[str] = set()
    revisions: set[int] = set()
    last_delete = -math.inf
    for op in ops:
        if op.kind == "cas":
            target, operand = op.arg[0], op.arg[1]
            if target == "value":
                tags.add(operand)
            elif target == "mod":
                revisions.add(operand)
        if op.out is None:
            continue
        if op.kind == "read":
            tags.add(op.out[0])
            revisions.add(op.out[1])
        elif op.kind == "cas" and op.out[2] is not None:
            tags.add(op.out[2][0])
            revisions.add(op.out[2][1])
        elif op.kind == "delete" and op.out[0]:
            last_delete = max(last_delete, op.ret)
    return tags, revisions, last_delete


def _mentions(op: KeyOp, referenced: tuple[set[str], set[int], float]) -> bool:
    """Whether a write may matter to a remaining observation (its value, or a delete after it)."""
    tags, _revisions, last_delete = referenced
    tag = op.arg[0] if op.kind == "put" else op.arg[2]
    return tag in tags or op.call < last_delete


def _reduce(
    ops: list[KeyOp],
    eligible: Callable[[KeyOp], bool],
    transform: Callable[[KeyOp], KeyOp | None],
    failing: Callable[[list[KeyOp]], bool],
) -> list[KeyOp]:
    """Apply ``transform`` (None: drop) to as many eligible ops as possible, keeping ``failing``.

    Delta-debugging style: chunks of halving size, oldest first.
    """
    slots: list[KeyOp | None] = list(ops)
    todo = [i for i, op in enumerate(ops) if eligible(op)]
    chunk = max(1, len(todo) // 2)
    while todo:
        i = 0
        while i < len(todo):
            group = todo[i : i + chunk]
            trial = list(slots)
            for j in group:
                op = trial[j]
                trial[j] = None if op is None else transform(op)
            if failing([op for op in trial if op is not None]):
                slots = trial
                del todo[i : i + chunk]
            else:
                i += chunk
        if chunk == 1:
            break
        chunk = max(1, chunk // 2)
    return [op for op in slots if op is not None]


def _safe_linearizable(ops: Sequence[KeyOp], budget: int) -> bool:
    try:
        return _linearizable(ops, budget)
    except BudgetExceeded:
        return True  # undecided: do not shrink on it


# -- projection of a recorded history on keys ---------------------------------------------------


def _read_of(kvs: Iterable[dict[str, Any]], key: str) -> Read:
    for kv in kvs:
        if kv["key"] == key:
            return (kv["value"], kv["mod"], kv["version"])
    return (None, 0, 0)


def _in_range(key: str, start: str, end: str) -> bool:
    if not end:
        return key == start
    if end == "\0":
        return key >= start
    return start <= key < end


def project(history: History) -> dict[str, list[KeyOp]]:
    """Per key, the operations the register model checks (serializable reads are not in it)."""
    ops = history.operations
    keys: set[str] = set()
    for o in ops:
        if o.kind in ("get", "put", "delete", "txn"):
            keys.add(o.args["key"])
    lease_keys: dict[int, set[str]] = {}
    for o in ops:
        if o.kind in ("put", "txn") and o.args.get("lease"):
            lease_keys.setdefault(o.args["lease"], set()).add(o.args["key"])
    per_key: dict[str, list[KeyOp]] = {k: [] for k in sorted(keys)}

    def add(key: str, op: Operation, kind: str, arg: tuple[Any, ...], out: tuple[Any, ...] | None) -> None:
        if key not in per_key:
            return
        known = op.status == OK
        per_key[key].append(
            KeyOp(op.id, op.call, op.return_time if known else math.inf, kind, arg, out if known else None)
        )

    for o in ops:
        a, r = o.args, o.result
        if o.status not in (OK, UNKNOWN):
            continue
        if o.kind == "get":
            if o.status == OK and not a.get("serializable") and not a.get("revision"):
                add(a["key"], o, "read", (), _read_of(r["kvs"], a["key"]))
        elif o.kind == "range":
            if o.status == OK and not a.get("serializable") and not a.get("limit"):
                for key in keys:
                    if _in_range(key, a["key"], a["range_end"]):
                        add(key, o, "read", (), _read_of(r["kvs"], key))
        elif o.kind == "put":
            add(a["key"], o, "put", (a["value"], a.get("lease", 0)), (r.get("revision"),))
        elif o.kind == "delete":
            add(a["key"], o, "delete", (), (r.get("deleted"), r.get("revision")))
        elif o.kind == "txn":
            read = None
            if o.status == OK and not r["succeeded"]:
                read = _read_of(r.get("kvs", []), a["key"])
            add(
                a["key"], o, "cas", (a["compare"], a["operand"], a["value"], a.get("lease", 0)),
                (r.get("succeeded"), r.get("revision"), read),
            )
        elif o.kind == "lease_revoke":
            for key in sorted(lease_keys.get(a["lease"], ())):
                add(key, o, "revoke", (a["lease"],), (r.get("revision"),))
    # A lease that is not kept alive (or whose keep-alive lapsed) may expire any time after its grant.
    for lease in history.leases:
        if lease.keep_alive and not lease.lapsed:
            continue
        for key in sorted(lease_keys.get(lease.lease_id, ())):
            per_key[key].append(
                KeyOp(-lease.grant_op - 1_000_000, lease.granted_at, math.inf, "revoke", (lease.lease_id,), None)
            )
    return per_key


# -- the verdict --------------------------------------------------------------------------------


@dataclass
class KeyVerdict:
    """The result for one key: linearizable or not, and a minimal witness when not."""

    key: str
    ok: bool
    operations: int
    undecided: bool = False
    witness: list[KeyOp] = field(default_factory=list)


@dataclass
class LinearizabilityResult:
    """The checker's verdict for a whole history."""

    keys: list[KeyVerdict]

    @property
    def ok(self) -> bool:
        """Whether every key is linearizable."""
        return all(k.ok for k in self.keys)

    @property
    def failures(self) -> list[KeyVerdict]:
        """The keys that are not linearizable."""
        return [k for k in self.keys if not k.ok]

    @property
    def undecided(self) -> list[KeyVerdict]:
        """The keys whose search ran over budget."""
        return [k for k in self.keys if k.undecided]

    def report(self, history: History) -> str:
        """The failing keys, each with its minimal non-linearizable operations, one per line."""
        lines: list[str] = []
        for verdict in self.failures:
            lines.append(
                f"key {verdict.key!r}: NOT linearizable ({verdict.operations} operations); "
                f"minimal witness ({len(verdict.witness)} operations):"
            )
            shown = _shown(verdict.witness)
            for kop in sorted(verdict.witness, key=lambda k: k.call):
                if kop in shown:
                    lines.append("  " + describe_key_op(history, kop))
            hidden = len(verdict.witness) - len(shown)
            if hidden:
                lines.append(
                    f"  ... and {hidden} earlier writes that had to take effect (the violation counts "
                    f"versions or needs a delete before an absence); all are in the saved history"
                )
        for verdict in self.undecided:
            lines.append(f"key {verdict.key!r}: undecided (search budget exceeded)")
        return "\n".join(lines)


def _shown(witness: list[KeyOp], context: int = 6) -> set[KeyOp]:
    """What a report prints of a witness: every op with a known outcome, and the last writes before them."""
    known = [k for k in witness if k.out is not None]
    if len(witness) <= 12 or not known:
        return set(witness)
    first = min(k.call for k in known)
    before = sorted((k for k in witness if k.out is None and k.call < first), key=lambda k: k.call)
    after = [k for k in witness if k.out is None and k.call >= first]
    return {*known, *before[-context:], *after}


def describe_key_op(history: History, kop: KeyOp) -> str:
    """A line for one op of a witness: the recorded call, marked when its outcome was relaxed."""
    if kop.op_id < 0:
        lease = kop.arg[0]
        return f"[{kop.call:.4f}, ∞] lease {lease:x} may expire (not kept alive)"
    op = history.op(kop.op_id)
    text = op.describe()
    if kop.out is None and op.status == OK:
        if kop.ret == math.inf:
            text += "   [still running at the violation: may or may not have taken effect]"
        elif kop.kind == "read":
            text += "   [version not needed]"
        else:
            text += "   [took effect; its result is not needed]"
    return text


def check_history(history: History, budget: int = 2_000_000) -> LinearizabilityResult:
    """Check every key's projection; minimise the failures."""
    verdicts: list[KeyVerdict] = []
    for key, ops in project(history).items():
        try:
            ok = _linearizable(ops, budget)
        except BudgetExceeded:
            verdicts.append(KeyVerdict(key, True, len(ops), undecided=True))
            continue
        verdict = KeyVerdict(key, ok, len(ops))
        if not ok:
            verdict.witness = minimise(ops)
        verdicts.append(verdict)
    return LinearizabilityResult(verdicts)
