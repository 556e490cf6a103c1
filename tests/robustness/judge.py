"""The verdict on one recorded history: every checker, and a report a person can act on.

:func:`judge` builds the reference from the watch streams, settles unknown
write outcomes with it, and runs the linearizability checker, the replay
checks (lost/phantom writes, reads at their revision, revision gaps), the
watch checks and the lease checks, plus whatever the scenario itself found
(recovery bound, HashKV mismatch, watchers that never caught up), which it
finds in ``history.final["problems"]``.

``python -m tests.robustness.judge HISTORY.json`` re-judges a saved history
(for replaying a failure without a cluster).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.robustness.history import FAILED, OK, UNKNOWN, History
from tests.robustness.lease_checks import check_leases
from tests.robustness.linearizability import check_history
from tests.robustness.replay import build_reference, check_replay, resolve_unknown
from tests.robustness.watch_checks import check_watches


@dataclass
class Verdict:
    """Sections of violations (empty: the history passed) and the counts a summary shows."""

    sections: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.sections

    def report(self, history: History) -> str:
        """The failure report: seed, fault schedule, faults executed, saved path, every violation."""
        meta = history.meta
        lines = [
            f"ROBUSTNESS FAILURE in scenario {meta.get('scenario')!r}: seed {meta.get('seed')}, "
            f"target {meta.get('target')} x{meta.get('size')}",
            "fault schedule: " + json.dumps(meta.get("schedule", [])),
            "faults executed: " + json.dumps(
                [{k: f.get(k) for k in ("fault", "members", "injected_at", "recovery_s", "notes")}
                 for f in history.faults]
            ),
        ]
        if meta.get("saved_to"):
            lines.append(f"history saved to {meta['saved_to']} "
                         f"(re-check: python -m tests.robustness.judge {meta['saved_to']})")
        for title, body in self.sections.items():
            lines.append(f"--- {title} ---")
            lines.append(body)
        return "\n".join(lines)


def judge(history: History) -> Verdict:
    """Run every check on ``history``."""
    verdict = Verdict()
    ops = history.operations
    verdict.stats = {
        "operations": len(ops),
        "ok": sum(o.status == OK for o in ops),
        "failed": sum(o.status == FAILED for o in ops),
        "unknown": sum(o.status == UNKNOWN for o in ops),
        "watches": len(history.watches),
        "faults": len(history.faults),
        "leases": len(history.leases),
    }
    ref = build_reference(history)
    resolved = resolve_unknown(history, ref)
    verdict.stats["unknown_after_watch"] = sum(o.status == UNKNOWN for o in resolved.operations)
    verdict.stats["reference_revisions"] = len(ref.events)
    lin = check_history(resolved)
    verdict.stats["keys"] = len(lin.keys)
    if not lin.ok or lin.undecided:
        verdict.sections["linearizability"] = lin.report(resolved)
    replay = check_replay(history, ref)
    verdict.stats["checked_reads"] = replay.checked_reads
    verdict.stats["checked_writes"] = replay.checked_writes
    if not replay.ok:
        verdict.sections["writes, reads and revisions vs. the watch history"] = replay.report()
    watches = check_watches(history, ref)
    verdict.stats["watch_events"] = watches.events
    verdict.stats["progress_notifications"] = watches.progress_notifications
    if not watches.ok:
        verdict.sections["watch guarantees"] = watches.report()
    leases = check_leases(history, ref)
    if not leases.ok:
        verdict.sections["lease semantics"] = leases.report()
    problems = history.final.get("problems", [])
    if problems:
        verdict.sections["cluster"] = "\n".join(problems)
    return verdict


def main(argv: list[str] | None = None) -> int:
    """Command line: re-judge a saved history; exit 1 if it fails."""
    parser = argparse.ArgumentParser(description="Re-judge a saved robustness history.")
    parser.add_argument("history", type=Path)
    args = parser.parse_args(argv)
    history = History.load(args.history)
    verdict = judge(history)
    print(json.dumps(verdict.stats))
    if verdict.ok:
        print("OK: every check passed")
        return 0
    print(verdict.report(history))
    return 1


if __name__ == "__main__":
    sys.exit(main())
