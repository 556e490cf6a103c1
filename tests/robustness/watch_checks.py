"""Watch guarantees, checked on every recorded stream against the reference revision history.

For each watch (whole prefix or a sub-range, from revision 0 = "now" or an
explicit start revision, possibly resumed by the client after failures):

* **ordered** — event revisions never go down;
* **unique** — no (revision, key) is delivered twice;
* **atomic** — the events of one revision arrive in one batch, all of them;
* **resumable** — nothing before the requested start revision is delivered;
* **reliable** — between its first and last revision the stream holds
  exactly the reference's events for its range, in the reference's order (so
  every watcher sees the same events, and none is missing);
* **prev_kv** — with ``prev_kv``, each event carries the key as it was at
  the revision before (nothing if it did not exist);
* **progress** — a progress notification at revision H comes only after
  every event up to H in the range was delivered, and no event at or below H
  follows it;
* a stream ends only by the client's close or a compaction (``CompactedError``);
  a short watch whose member was down when it was opened is "NotCreated".

The reference is built by :func:`tests.robustness.replay.build_reference`; a
revision it does not cover is not judged by "reliable" (but "ordered",
"unique" and "atomic within the stream" still are).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.robustness.history import History, WatchEvent, WatchRecord
from tests.robustness.replay import KeyState, Reference, event_key, states_at

EXPECTED_END_ERRORS = ("ClientClosedError", "CompactedError", "NotCreated")


@dataclass
class WatchResult:
    """Violations per watch (empty: all good) and how much was checked."""

    violations: list[str] = field(default_factory=list)
    watches: int = 0
    events: int = 0
    progress_notifications: int = 0

    @property
    def ok(self) -> bool:
        """Whether no watch violation was found."""
        return not self.violations

    def report(self) -> str:
        """The violations, at most 30."""
        shown = self.violations[:30]
        more = len(self.violations) - len(shown)
        return "\n".join([*shown, *([f"... and {more} more"] if more > 0 else [])])


def _describe(e: WatchEvent) -> str:
    value = "" if e.value is None else f"={e.value}"
    return f"{e.type} {e.key}{value}@{e.mod}"


def check_watches(history: History, ref: Reference) -> WatchResult:
    """Every property of the module docstring, for every watch of ``history``."""
    result = WatchResult()
    before = {
        e.mod - 1
        for w in history.watches if w.prev_kv
        for b in w.batches for e in b.events
        if ref.is_covered(e.mod - 1) or e.mod - 1 <= 1
    }
    states = states_at(ref, before)
    for w in history.watches:
        result.watches += 1
        result.violations.extend(check_watch(w, ref, result, states))
    return result


def check_watch(
    w: WatchRecord,
    ref: Reference,
    counters: WatchResult | None = None,
    states: dict[int, dict[str, KeyState]] | None = None,
) -> list[str]:
    """The violations of one watch stream (``states``: the replayed store, for ``prev_kv``)."""
    out: list[str] = []
    name = f"watch {w.id} (client {w.client}, [{w.key!r}, {w.range_end!r}) from {w.first_revision})"
    seen: set[tuple[int, str]] = set()
    delivered: list[WatchEvent] = []
    last_rev = 0
    progress_floor = 0
    for b in w.batches:
        if b.is_progress:
            if counters is not None:
                counters.progress_notifications += 1
            missing = _missing_up_to(w, ref, delivered, b.revision)
            if missing:
                out.append(
                    f"{name}: progress notification at revision {b.revision} before "
                    f"{', '.join(_describe(e) for e in missing[:5])} was delivered"
                )
            progress_floor = max(progress_floor, b.revision)
            continue
        batch_revs: list[int] = []
        for e in b.events:
            if counters is not None:
                counters.events += 1
            if e.mod < w.first_revision:
                out.append(f"{name}: {_describe(e)} is before the start revision {w.first_revision}")
            if (e.mod, e.key) in seen:
                out.append(f"{name}: {_describe(e)} delivered twice")
            elif e.mod < last_rev:
                out.append(f"{name}: {_describe(e)} after an event of revision {last_rev} (out of order)")
            elif e.mod == last_rev and (not batch_revs or batch_revs[-1] != e.mod):
                out.append(f"{name}: revision {e.mod} split across batches ({_describe(e)} came later)")
            if e.mod <= progress_floor:
                out.append(
                    f"{name}: {_describe(e)} after a progress notification at revision {progress_floor}"
                )
            if not w.covers(e.key):
                out.append(f"{name}: {_describe(e)} is outside the watched range")
            if w.prev_kv and states is not None and e.mod - 1 in states:
                s = states[e.mod - 1].get(e.key)
                want_prev = None if s is None else [s.value, s.mod, s.create, s.version, s.lease]
                if e.prev != want_prev:
                    out.append(f"{name}: {_describe(e)} came with prev_kv {e.prev}, the key was {want_prev}")
            seen.add((e.mod, e.key))
            last_rev = max(last_rev, e.mod)
            batch_revs.append(e.mod)
            delivered.append(e)
        for rev in sorted(set(batch_revs)):
            if rev not in ref.events:
                continue
            want = [event_key(e) for e in ref.events[rev] if w.covers(e.key)]
            got = [event_key(e) for e in b.events if e.mod == rev]
            if want != got:
                out.append(f"{name}: revision {rev} delivered as {got}, the reference has {want}")
    out.extend(_reliability(w, ref, delivered, name))
    if w.error and not w.error.startswith(EXPECTED_END_ERRORS):
        out.append(f"{name}: ended with {w.error}")
    return out


def _expected(w: WatchRecord, ref: Reference, lo: int, hi: int) -> list[WatchEvent]:
    return [
        e
        for rev in range(lo, hi + 1)
        if ref.is_covered(rev)
        for e in ref.events.get(rev, [])
        if w.covers(e.key)
    ]


def _missing_up_to(
    w: WatchRecord, ref: Reference, delivered: list[WatchEvent], revision: int
) -> list[WatchEvent]:
    have = {(e.mod, e.key) for e in delivered}
    return [e for e in _expected(w, ref, w.first_revision, revision) if (e.mod, e.key) not in have]


def _reliability(w: WatchRecord, ref: Reference, delivered: list[WatchEvent], name: str) -> list[str]:
    """The stream's events over its span equal the reference's, for every covered revision."""
    hi = w.last_revision
    want = [event_key(e) for e in _expected(w, ref, w.first_revision, hi)]
    got = [event_key(e) for e in delivered if ref.is_covered(e.mod) and e.mod <= hi]
    if want == got:
        return []
    i = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
    return [
        f"{name}: stream differs from the reference at event #{i}: "
        f"got {got[i:i + 3]}, expected {want[i:i + 3]} "
        f"({len(got)} events delivered, {len(want)} expected up to revision {hi})"
    ]
