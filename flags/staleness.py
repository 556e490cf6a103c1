"""Stale flags: evaluation counts reported by SDKs, and which flags look forgotten.

SDKs report how often they evaluated each flag, in batches, to ``POST
/api/v1/sdk/evaluations/`` (``flags.api.evaluations``). :func:`do_record_evaluations`
folds a batch into one record per flag and environment at
``/evaluations/<project>/<env>/<flag>`` -- ``{"count", "last_evaluated_at",
"first_reported_at"}`` (unix seconds), merged by CAS so concurrent batches
from many SDK instances all count.

A flag is *potentially stale* (the flag list marks it and can show only
those) when, in every environment it exists in,

* it was not changed for ``FLAGSTAFF_STALE_UNCHANGED_SECONDS`` (its
  ``updated_at``), or
* no SDK reported evaluating it for ``FLAGSTAFF_STALE_UNEVALUATED_SECONDS``
  (never reported counts as not evaluated once the flag is older than that).

Either reason alone is enough; the list shows which applied.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from consensus.client import compare_create, compare_mod, op_put
from flags import keyspace
from flags.core import Actor, Entry, core, encode_json
from flags.exceptions import AccessDenied, Conflict, InvalidInput
from flags.permissions import Perm, has_permission
from flags.records import FlagOverview

MAX_FLAGS_PER_BATCH = 1000
MAX_COUNT = 10**12
BATCH_KEYS = 100
CAS_ATTEMPTS = 8
FUTURE_SLACK_SECONDS = 300
"""A batch may end at most this far in the future (clock skew)."""
REPORTER = Actor.system("evaluation-counts")


def _seconds(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0:
        raise InvalidInput("must be unix seconds", field=field)
    return float(value)


def check_batch(body: object) -> tuple[str, str, dict[str, int], float, float]:
    """A validated batch: (project, environment, counts, start, end)."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    environment = body.get("environment")
    parts = environment.split("/") if isinstance(environment, str) else []
    if len(parts) != 2 or not all(keyspace.is_key(p) for p in parts):
        raise InvalidInput("must be <project>/<environment>", field="environment")
    counts = body.get("counts")
    if not isinstance(counts, dict) or len(counts) > MAX_FLAGS_PER_BATCH:
        raise InvalidInput(f"must be an object of at most {MAX_FLAGS_PER_BATCH} flag: count pairs",
                           field="counts")
    for flag, count in counts.items():
        if not keyspace.is_key(flag):
            raise InvalidInput("is not a flag key", field=f"counts.{flag}"[:200])
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            raise InvalidInput(f"must be a whole number from 0 to {MAX_COUNT}", field=f"counts.{flag}")
    start, end = _seconds(body.get("start"), "start"), _seconds(body.get("end"), "end")
    if end < start:
        raise InvalidInput("must not be before start", field="end")
    if end > time.time() + FUTURE_SLACK_SECONDS:
        raise InvalidInput("is in the future", field="end")
    return parts[0], parts[1], dict(counts), start, end


def _merged(entry: Entry | None, count: int, end: float) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if entry is not None:
        try:
            value = entry.json()
        except (ValueError, UnicodeDecodeError):
            value = {}
        record = value if isinstance(value, dict) else {}
    total = record.get("count")
    record["count"] = (total if isinstance(total, int) else 0) + count
    last = record.get("last_evaluated_at")
    if count > 0:
        record["last_evaluated_at"] = max(float(last), end) if isinstance(last, int | float) else end
    record.setdefault("first_reported_at", end)
    return record


def do_record_evaluations(principal: Any, body: object) -> int:
    """Fold one SDK batch into the evaluation records; how many flags it counted.

    ``principal`` (an SDK token or a user) must be allowed to read the
    environment's flags. Counts for flags that do not exist are ignored.
    """
    project, environment, counts, _start, end = check_batch(body)
    if not has_permission(principal, Perm.READ, keyspace.flags_prefix(project, environment)):
        raise AccessDenied(f"this key may not report for {project}/{environment}",
                           field="environment")
    listing = core().list(keyspace.flags_prefix(project, environment), keys_only=True)
    existing = {keyspace.last_segment(e.key) for e in listing.entries}
    flags = sorted(f for f in counts if f in existing)
    for start in range(0, len(flags), BATCH_KEYS):
        chunk = flags[start:start + BATCH_KEYS]
        keys = {f: keyspace.evaluation_key(project, environment, f) for f in chunk}
        for _ in range(CAS_ATTEMPTS):
            snapshot = core().get_many(keys.values())
            writes = {k: encode_json(_merged(snapshot.entries[k], counts[f], end))
                      for f, k in keys.items()}
            compares = [compare_mod(k, "=", e.revision) if e is not None else compare_create(k, "=", 0)
                        for k, e in snapshot.entries.items()]
            response = core().commit(compares, [op_put(k, v) for k, v in writes.items()],
                                     actor=REPORTER, expect=writes)
            if response.succeeded:
                break
        else:
            raise Conflict("too many concurrent reports; send the batch again", current=None,
                           revision=0)
    return len(flags)


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.0f} days" if days >= 1 else f"{seconds:.0f} s"


def staleness(overview: FlagOverview, evaluations: Mapping[str, Mapping[str, Any]], *,
              now: float, unchanged_seconds: float, unevaluated_seconds: float) -> list[str]:
    """Why ``overview``'s flag is potentially stale (empty: it is not).

    ``evaluations``: the evaluation records by environment key.
    """
    states = list(overview.states.values())
    if not states:
        return []
    reasons = []
    changed = [_timestamp(s.document.get("updated_at")) for s in states]
    if all(t is not None and now - t >= unchanged_seconds for t in changed):
        reasons.append(f"unchanged for {_days(unchanged_seconds)}")
    not_evaluated = True
    for state in states:
        last = evaluations.get(state.environment, {}).get("last_evaluated_at")
        if isinstance(last, int | float):
            if now - last < unevaluated_seconds:
                not_evaluated = False
        else:
            created = _timestamp(state.document.get("created_at"))
            if created is None or now - created < unevaluated_seconds:
                not_evaluated = False
    if not_evaluated:
        reasons.append(f"not evaluated for {_days(unevaluated_seconds)}")
    return reasons


def access_stale_flags(user: Any, project: str, overviews: Sequence[FlagOverview], *,
                       now: float | None = None) -> dict[str, list[str]]:
    """The potentially stale flags among ``overviews`` (which ``user`` may read): reasons by flag."""
    from django.conf import settings

    listing = core().list(f"{keyspace.EVALUATIONS}{project}/")
    records: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in listing.entries:
        parts = entry.key[len(keyspace.EVALUATIONS):].split("/")
        if len(parts) != 3 or not has_permission(user, Perm.READ,
                                                 keyspace.flag_key(parts[0], parts[1], parts[2])):
            continue
        try:
            value = entry.json()
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(value, dict):
            records.setdefault(parts[2], {})[parts[1]] = value
    moment = time.time() if now is None else now
    found = {}
    for overview in overviews:
        reasons = staleness(overview, records.get(overview.key, {}), now=moment,
                            unchanged_seconds=settings.FLAGSTAFF_STALE_UNCHANGED_SECONDS,
                            unevaluated_seconds=settings.FLAGSTAFF_STALE_UNEVALUATED_SECONDS)
        if reasons:
            found[overview.key] = reasons
    return found


def access_evaluations(user: Any, project: str, environment: str, flag: str) -> dict[str, Any] | None:
    """The evaluation record of one flag in one environment (None: never reported)."""
    if not has_permission(user, Perm.READ, keyspace.flag_key(project, environment, flag)):
        return None
    entry = core().get(keyspace.evaluation_key(project, environment, flag))
    if entry is None:
        return None
    try:
        value = entry.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
