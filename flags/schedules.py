"""Scheduled flag changes and progressive rollouts: records in the core, carried out by Celery.

A *schedule* is one JSON record at ``/schedules/<project>/<env>/<flag>/<id>``
(``flags.keyspace``); the platform keeps nothing else. Two kinds:

* ``once`` -- one change (``{"on": bool}``, ``{"percentage": p}`` or
  ``{"document": {...}}``: a full replacement) applied at ``next_at``;
* ``progressive`` -- a boolean flag's rollout percentage raised through
  ``steps`` (linear: ``step, 2*step, ... target``; exponential: ``initial,
  initial*factor, ... target``, as AWS AppConfig), one step per
  ``bake_seconds``. Before each later step, and once after the last, an
  opt-in health signal is asked (a webhook's answer or a Prometheus query,
  ``flags.health``); a failure rolls the flag back to the percentage it had
  before the rollout started and ends the schedule as ``rolled_back``.

Exactly once, also with several workers or a worker killed mid-step: a step
is decided from the schedule and the flag as read, then committed as ONE core
txn that compares both keys' ``mod_revision`` with what was read and writes
the flag and the schedule's progress together. A second worker that read the
same revisions loses the compare and re-reads (the step is no longer due); a
worker killed before its commit left nothing, one killed after left both
writes. The txn's expected values include the step counter, so the gateway's
read-back after an uncertain commit is exact.

States: ``pending`` (a ``once`` before its time; a progressive rollout before
its first step), ``running``, ``paused``, ``completed``, ``cancelled``,
``rolled_back``, ``failed`` (the change became impossible: the flag was
deleted or is no longer valid for it; ``last_error`` says why).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consensus.client import compare_mod, op_put
from flags import keyspace
from flags.core import Actor, Entry, core, encode_json
from flags.engine import WEIGHT_SCALE, FlagKind
from flags.engine.document import FLAG_FIELDS
from flags.exceptions import Conflict, FlagstaffError, InvalidInput, NotFound
from flags.health import HealthSignal, check_health, parse_health
from flags.records import FlagState, now_iso
from flags.validation import check_flag_document, percentage_to_weight

logger = logging.getLogger(__name__)

SCHEDULER = Actor.system("scheduler")
"""Who the scheduler's writes are attributed to in the audit trail."""
CAS_ATTEMPTS = 8
MAX_STEPS = 100
MAX_BAKE_SECONDS = 30 * 24 * 3600
MAX_HISTORY = 200
ACTIVE = ("pending", "running")
FINISHED = ("completed", "cancelled", "rolled_back", "failed")

CRASH_ENV = "FLAGSTAFF_SCHEDULER_CRASH"
"""Test-only: ``before-commit`` or ``after-commit`` SIGKILLs the process at that point of a step."""


def _crash_point(where: str) -> None:
    if os.environ.get(CRASH_ENV) == where:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule as stored (``document``) and the mod revision it was read at."""

    project: str
    environment: str
    flag: str
    id: str
    document: dict[str, Any]
    revision: int

    @property
    def core_key(self) -> str:
        return keyspace.schedule_key(self.project, self.environment, self.flag, self.id)

    @property
    def flag_key(self) -> str:
        return keyspace.flag_key(self.project, self.environment, self.flag)

    @property
    def kind(self) -> str:
        return str(self.document.get("kind", ""))

    @property
    def state(self) -> str:
        return str(self.document.get("state", ""))

    @property
    def next_at(self) -> float:
        value = self.document.get("next_at")
        return float(value) if isinstance(value, int | float) else math.inf

    @property
    def steps(self) -> list[float]:
        steps = self.document.get("steps")
        return [float(s) for s in steps] if isinstance(steps, list) else []

    @property
    def step(self) -> int:
        step = self.document.get("step")
        return step if isinstance(step, int) else 0

    def due(self, now: float) -> bool:
        return self.state in ACTIVE and self.next_at <= now

    def to_json(self) -> dict[str, Any]:
        """The record as the REST API shows it."""
        return {**self.document, "id": self.id, "project": self.project,
                "environment": self.environment, "flag": self.flag, "revision": self.revision}

    @classmethod
    def from_entry(cls, entry: Entry) -> Schedule:
        rest = entry.key[len(keyspace.SCHEDULES):].split("/")
        if len(rest) != 4:
            raise ValueError(f"{entry.key!r} is not a schedule key")
        try:
            document = entry.json()
        except (ValueError, UnicodeDecodeError):
            document = {}
        return cls(rest[0], rest[1], rest[2], rest[3],
                   document if isinstance(document, dict) else {}, entry.revision)


# -- flag document changes --------------------------------------------------------------------


def current_percentage(document: dict[str, Any]) -> float | None:
    """The share (0-100) of contexts a boolean flag's fallthrough serves ``true``, else None."""
    variations = document.get("variations")
    if document.get("kind") != FlagKind.BOOLEAN or not isinstance(variations, list) \
            or True not in variations:
        return None
    yes = variations.index(True)
    fallthrough = document.get("fallthrough")
    if not isinstance(fallthrough, dict):
        return None
    if "variation" in fallthrough:
        return 100.0 if fallthrough["variation"] == yes else 0.0
    rollout = fallthrough.get("rollout")
    slices = rollout.get("variations") if isinstance(rollout, dict) else None
    if not isinstance(slices, list):
        return None
    weight = sum(s.get("weight", 0) for s in slices
                 if isinstance(s, dict) and s.get("variation") == yes and isinstance(s.get("weight"), int))
    return float(weight) / (WEIGHT_SCALE // 100)


def _with_percentage(document: dict[str, Any], percentage: float) -> dict[str, Any]:
    """``document`` serving ``true`` to ``percentage`` % of contexts (bucket_by and seed kept)."""
    variations = document.get("variations")
    if document.get("kind") != FlagKind.BOOLEAN or not isinstance(variations, list) \
            or True not in variations or False not in variations:
        raise InvalidInput("a percentage applies to boolean flags", field="change.percentage")
    weight = percentage_to_weight(round(percentage, 3))
    yes, no = variations.index(True), variations.index(False)
    fallthrough = document.get("fallthrough")
    old = fallthrough.get("rollout") if isinstance(fallthrough, dict) else None
    rollout: dict[str, Any] = {"variations": [{"variation": yes, "weight": weight},
                                              {"variation": no, "weight": WEIGHT_SCALE - weight}]}
    if isinstance(old, dict):
        rollout.update({k: old[k] for k in ("bucket_by", "seed") if k in old})
    doc = copy.deepcopy(document)
    doc["fallthrough"] = {"rollout": rollout}
    return doc


def _stamped(document: dict[str, Any], base: dict[str, Any], actor: Actor) -> dict[str, Any]:
    """``document`` with the platform-owned fields of a write over ``base`` (as ``flags.actions``)."""
    doc = dict(document)
    if "salt" not in doc and isinstance(base.get("salt"), str):
        doc["salt"] = base["salt"]
    created = base.get("created_at")
    doc["created_at"] = created if isinstance(created, str) else now_iso()
    version = base.get("version")
    doc["version"] = version + 1 if isinstance(version, int) and not isinstance(version, bool) else 1
    doc["updated_at"] = now_iso()
    if "updated_by" in FLAG_FIELDS:
        doc["updated_by"] = actor.principal
    return doc


def _changed_document(change: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """The flag document a ``once`` schedule's ``change`` makes of ``document``."""
    if "on" in change:
        return dict(document, on=change["on"])
    if "percentage" in change:
        return _with_percentage(document, float(change["percentage"]))
    replacement = dict(change["document"])
    replacement.setdefault("salt", document.get("salt"))
    return replacement


def _check_change(change: object, state: FlagState) -> dict[str, Any]:
    if not isinstance(change, dict) or len(change) != 1 \
            or next(iter(change)) not in ("on", "percentage", "document"):
        raise InvalidInput('must be one of {"on": true|false}, {"percentage": 0-100} or '
                           '{"document": {...}}', field="change")
    if "on" in change and not isinstance(change["on"], bool):
        raise InvalidInput("must be true or false", field="change.on")
    if "percentage" in change:
        percentage_to_weight(change["percentage"], field="change.percentage")
        change = {"percentage": float(change["percentage"])}
    if "document" in change:
        if not isinstance(change["document"], dict):
            raise InvalidInput("must be a JSON object", field="change.document")
        change["document"].setdefault("key", state.key)
    new = _changed_document(change, state.document)
    check_flag_document(_stamped(new, state.document, SCHEDULER), key=state.key,
                        field="change.document")
    return change


# -- creating and steering schedules ----------------------------------------------------------


def _timestamp(value: object, field: str) -> float:
    """A time given as unix seconds or an RFC 3339 string."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    raise InvalidInput("must be unix seconds or an RFC 3339 time", field=field)


def progressive_steps(strategy: str, step: float, target: float, factor: float = 2.0) -> list[float]:
    """The percentages a progressive rollout goes through, the last one ``target``."""
    if strategy not in ("linear", "exponential"):
        raise InvalidInput("must be 'linear' or 'exponential'", field="strategy")
    if not 0 < step <= 100:
        raise InvalidInput("must be more than 0 and at most 100", field="step_percentage")
    if not 0 < target <= 100:
        raise InvalidInput("must be more than 0 and at most 100", field="target_percentage")
    if strategy == "exponential" and not factor > 1:
        raise InvalidInput("must be more than 1", field="growth_factor")
    steps: list[float] = []
    value = step
    while value < target and len(steps) < MAX_STEPS:
        steps.append(round(value, 3))
        value = value + step if strategy == "linear" else value * factor
    steps.append(round(target, 3))
    if len(steps) > MAX_STEPS:
        raise InvalidInput(f"gives more than {MAX_STEPS} steps", field="step_percentage")
    return steps


def _number(data: dict[str, Any], name: str, default: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput("must be a number", field=name)
    return float(value)


def do_create_schedule(state: FlagState, data: dict[str, Any], *, actor: Actor) -> Schedule:
    """Store a new schedule for ``state``'s flag (validated now; carried out by the scheduler).

    ``data``: ``{"kind": "once", "at": time, "change": {...}}`` or
    ``{"kind": "progressive", "strategy": "linear"|"exponential",
    "step_percentage": p, "growth_factor": f, "target_percentage": 100,
    "bake_seconds": s, "start_at": time (default now), "health": {...}}``.
    """
    if not isinstance(data, dict):
        raise InvalidInput("must be a JSON object")
    kind = data.get("kind")
    now = time.time()
    document: dict[str, Any] = {
        "kind": kind, "state": "pending", "created_by": actor.principal, "created_at": now_iso(),
        "reason": actor.reason, "history": [], "last_error": "",
    }
    if kind == "once":
        document["change"] = _check_change(data.get("change"), state)
        document["next_at"] = _timestamp(data.get("at"), "at")
    elif kind == "progressive":
        if current_percentage(state.document) is None:
            raise InvalidInput("progressive rollouts apply to boolean flags", field="kind")
        bake = _number(data, "bake_seconds", 3600)
        if not 0 <= bake <= MAX_BAKE_SECONDS:
            raise InvalidInput(f"must be 0 to {MAX_BAKE_SECONDS}", field="bake_seconds")
        strategy = str(data.get("strategy", "linear"))
        document.update(
            strategy=strategy,
            steps=progressive_steps(strategy, _number(data, "step_percentage", 10),
                                    _number(data, "target_percentage", 100),
                                    _number(data, "growth_factor", 2)),
            bake_seconds=bake, step=0, baseline=None,
            health=parse_health(data.get("health")),
            next_at=_timestamp(data["start_at"], "start_at") if data.get("start_at") else now,
        )
        for step in document["steps"]:
            percentage_to_weight(step, field="step_percentage")
    else:
        raise InvalidInput("must be 'once' or 'progressive'", field="kind")
    schedule_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
    key = keyspace.schedule_key(state.project, state.environment, state.key, schedule_id)
    value = encode_json(document)
    response = core().commit(
        [compare_mod(key, "=", 0)], [op_put(key, value)], actor=actor, expect={key: value})
    if not response.succeeded:  # pragma: no cover - a fresh random id
        raise Conflict("a schedule with that id exists; try again", current=None, revision=0)
    return Schedule(state.project, state.environment, state.key, schedule_id, document,
                    int(response.header.revision))


def read_schedule(project: str, environment: str, flag: str, schedule_id: str) -> Schedule:
    entry = core().get(keyspace.schedule_key(project, environment, flag, schedule_id))
    if entry is None:
        raise NotFound(f"no schedule {schedule_id!r} for {project}/{environment}/{flag}")
    return Schedule.from_entry(entry)


def list_schedules(project: str, environment: str, flag: str) -> list[Schedule]:
    """One flag's schedules in one environment, oldest first."""
    listing = core().list(keyspace.flag_schedules_prefix(project, environment, flag))
    return [Schedule.from_entry(e) for e in listing.entries]


def _event(document: dict[str, Any], what: str, **detail: Any) -> None:
    history = document.setdefault("history", [])
    history.append({"at": now_iso(), "event": what, **detail})
    del history[:-MAX_HISTORY]


def _steer(schedule: Schedule, change: Callable[[dict[str, Any]], dict[str, Any]], *,
           actor: Actor) -> Schedule:
    """CAS-write ``change(document)`` over the schedule, re-reading on a lost race."""
    for _ in range(CAS_ATTEMPTS):
        document = change(copy.deepcopy(schedule.document))
        value = encode_json(document)
        response = core().commit([compare_mod(schedule.core_key, "=", schedule.revision)],
                                 [op_put(schedule.core_key, value)], actor=actor,
                                 expect={schedule.core_key: value})
        if response.succeeded:
            return Schedule(schedule.project, schedule.environment, schedule.flag, schedule.id,
                            document, int(response.header.revision))
        schedule = read_schedule(schedule.project, schedule.environment, schedule.flag, schedule.id)
    raise Conflict("the schedule kept changing; try again", current=None, revision=0)


def do_pause_schedule(schedule: Schedule, *, actor: Actor) -> Schedule:
    """Stop a pending or running schedule where it is (the time left to the next step is kept)."""
    def pause(doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("state") not in ACTIVE:
            raise InvalidInput(f"a {doc.get('state')} schedule cannot be paused", field="state")
        doc["paused_from"] = doc["state"]
        doc["remaining_seconds"] = max(0.0, float(doc.get("next_at", 0)) - time.time())
        doc["state"] = "paused"
        _event(doc, "paused", by=actor.principal)
        return doc
    return _steer(schedule, pause, actor=actor)


def do_resume_schedule(schedule: Schedule, *, actor: Actor) -> Schedule:
    """Continue a paused schedule: its next step comes after the time that was left."""
    def resume(doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("state") != "paused":
            raise InvalidInput("only a paused schedule can be resumed", field="state")
        doc["state"] = doc.pop("paused_from", "running")
        remaining = doc.pop("remaining_seconds", 0.0)
        if doc.get("kind") == "progressive":
            doc["next_at"] = time.time() + float(remaining)
        _event(doc, "resumed", by=actor.principal)
        return doc
    return _steer(schedule, resume, actor=actor)


def do_cancel_schedule(schedule: Schedule, *, actor: Actor) -> Schedule:
    """End a schedule without further changes (what it already applied stays)."""
    def cancel(doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("state") in FINISHED:
            raise InvalidInput(f"the schedule is {doc.get('state')} already", field="state")
        doc["state"] = "cancelled"
        _event(doc, "cancelled", by=actor.principal)
        return doc
    return _steer(schedule, cancel, actor=actor)


def do_rollback_schedule(schedule: Schedule, *, actor: Actor, why: str = "rolled back by hand") -> Schedule:
    """Put a progressive rollout's flag back to its starting percentage and end it (one txn)."""
    if schedule.kind != "progressive":
        raise InvalidInput("only a progressive rollout can be rolled back", field="kind")
    if schedule.state in FINISHED:
        raise InvalidInput(f"the schedule is {schedule.state} already", field="state")
    outcome = _step(schedule, time.time(), actor=actor, rollback=why)
    if outcome.schedule is None:
        raise NotFound("the schedule is gone")
    return outcome.schedule


# -- carrying schedules out -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one attempt at a due schedule did: ``applied`` a step (or finished), or not."""

    applied: bool
    what: str
    schedule: Schedule | None


def _decide(schedule: Schedule, flag: FlagState | None, now: float,
            rollback: str | None, health_ok: Callable[[HealthSignal, Schedule], str | None],
            ) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """(new schedule document, new flag document or None, description) for one step."""
    doc = copy.deepcopy(schedule.document)
    if flag is None:
        doc["state"] = "failed"
        doc["last_error"] = "the flag no longer exists"
        _event(doc, "failed", error=doc["last_error"])
        return doc, None, "failed: flag deleted"
    if schedule.kind == "once":
        new_flag = _changed_document(doc["change"], flag.document)
        doc["state"] = "completed"
        _event(doc, "applied", change=sorted(doc["change"]))
        return doc, new_flag, "applied"
    steps, step = schedule.steps, schedule.step
    if rollback is None and step > 0:
        health = parse_health(doc.get("health"))
        problem = health_ok(health, schedule) if health is not None else None
        if problem is not None:
            rollback = f"health signal failed: {problem}"
    if rollback is not None:
        baseline = doc.get("baseline")
        target = float(baseline) if isinstance(baseline, int | float) else 0.0
        doc["state"] = "rolled_back"
        doc["last_error"] = rollback
        _event(doc, "rolled_back", percentage=target, why=rollback)
        return doc, _with_percentage(flag.document, target), f"rolled back to {target}%"
    if step >= len(steps):
        doc["state"] = "completed"
        _event(doc, "completed")
        return doc, None, "completed"
    if step == 0:
        doc["baseline"] = current_percentage(flag.document)
    percentage = steps[step]
    doc["step"] = step + 1
    doc["state"] = "running"
    doc["next_at"] = now + float(doc.get("bake_seconds", 0))
    _event(doc, "step", step=step + 1, percentage=percentage)
    return doc, _with_percentage(flag.document, percentage), f"step {step + 1}: {percentage}%"


def _step(schedule: Schedule, now: float, *, actor: Actor = SCHEDULER,
          rollback: str | None = None,
          health_ok: Callable[[HealthSignal, Schedule], str | None] | None = None) -> StepOutcome:
    """Carry out ``schedule``'s due step (or a rollback) in one txn; re-read on a lost race."""
    health_ok = health_ok or check_health
    for _ in range(CAS_ATTEMPTS):
        if rollback is None and not schedule.due(now):
            return StepOutcome(False, "not due", schedule)
        flag_entry = core().get(schedule.flag_key)
        flag = None if flag_entry is None else FlagState.from_entry(flag_entry)
        try:
            doc, new_flag, what = _decide(schedule, flag, now, rollback, health_ok)
            if new_flag is not None and flag is not None:
                new_flag = _stamped(new_flag, flag.document, actor)
                check_flag_document(new_flag, key=flag.key)
        except FlagstaffError as exc:
            doc = copy.deepcopy(schedule.document)
            doc["state"], doc["last_error"] = "failed", str(exc)
            _event(doc, "failed", error=str(exc))
            new_flag, what = None, f"failed: {exc}"
        doc["updated_at"] = now_iso()
        value = encode_json(doc)
        compares = [compare_mod(schedule.core_key, "=", schedule.revision)]
        puts = [op_put(schedule.core_key, value)]
        expect: dict[str, bytes | None] = {schedule.core_key: value}
        if new_flag is not None and flag is not None:
            flag_value = encode_json(new_flag)
            compares.append(compare_mod(schedule.flag_key, "=", flag.revision))
            puts.append(op_put(schedule.flag_key, flag_value))
            expect[schedule.flag_key] = flag_value
        elif flag is None:
            compares.append(compare_mod(schedule.flag_key, "=", 0))
        else:
            compares.append(compare_mod(schedule.flag_key, "=", flag.revision))
        _crash_point("before-commit")
        reason = actor.reason or f"schedule {schedule.id}: {what}"
        response = core().commit(compares, puts, actor=actor.with_reason(reason), expect=expect)
        _crash_point("after-commit")
        if response.succeeded:
            revision = int(response.header.revision)
            logger.info("schedule %s (%s): %s at revision %d", schedule.id, schedule.flag_key,
                        what, revision)
            return StepOutcome(True, what, Schedule(schedule.project, schedule.environment,
                                                    schedule.flag, schedule.id, doc, revision))
        entry = core().get(schedule.core_key)
        if entry is None:
            return StepOutcome(False, "deleted", None)
        fresh = Schedule.from_entry(entry)
        if fresh.revision != schedule.revision and rollback is None:
            # Someone else (another worker, a pause) moved it: decide again from what it is now.
            schedule = fresh
            continue
        if fresh.state in FINISHED:
            return StepOutcome(False, f"already {fresh.state}", fresh)
        schedule = fresh  # only the flag moved (or a rollback raced): retry on fresh data
    return StepOutcome(False, "kept losing races", schedule)


def run_due_schedules(*, now: float | None = None, prefix: str = keyspace.SCHEDULES) -> list[StepOutcome]:
    """Carry out every schedule due at ``now`` (one step each); what each attempt did.

    Celery beat calls this every ``FLAGSTAFF_SCHEDULER_TICK_SECONDS`` (task
    ``flags.tasks.run_schedules``); any number of workers may run it at once.
    """
    if not prefix.startswith(keyspace.SCHEDULES):
        raise InvalidInput("must be under /schedules/", field="prefix")
    moment = time.time() if now is None else now
    outcomes = []
    for entry in core().list(prefix).entries:
        try:
            schedule = Schedule.from_entry(entry)
        except ValueError:
            continue
        if not schedule.due(moment):
            continue
        try:
            outcomes.append(_step(schedule, moment))
        except FlagstaffError as exc:  # the core is unreachable: the next tick tries again
            logger.warning("schedule %s: %s", schedule.id, exc)
            outcomes.append(StepOutcome(False, f"error: {exc}", schedule))
    return outcomes
