"""Test-only failpoints and deliberately injected bugs, switched on by environment variables.

Robustness tests (``tests/robustness/``) crash members at precise points and
prove that the suite catches a known bug. Nothing here is active unless the
member's environment asks for it, and a disabled site costs one attribute
read: call sites are written ``if failpoints.ACTIVE: failpoints.hit("name")``.

``FLAGSTAFF_FAILPOINTS`` is a comma-separated list of ``name:action``:

* actions: ``crash`` (SIGKILL this process: nothing is flushed, like
  ``kill -9`` at that instant), ``panic`` (raise :class:`FailpointPanic`),
  ``sleep(<ms>)``;
* ``@N`` after the action: trigger on the N-th hit only (``crash@50``);
  ``%P``: trigger with probability P on each hit (``crash%0.01``), drawn from
  a generator seeded by ``FLAGSTAFF_FAILPOINTS_SEED`` (default 0).

Sites (see :data:`SITES`): ``before-wal-fsync`` / ``after-wal-fsync`` (a
Ready's persist: before it starts, after it is durable and before its
messages leave), ``before-apply`` / ``after-apply`` (one normal entry, around
the state machine's apply; after-apply is before the proposer is answered),
``before-snapshot-save`` (a member's own snapshot, before anything is
written), ``snapshot-saved-before-marker`` (the snapshot file is durable, the
WAL marker is not yet written), ``snapshot-install-saved`` (a snapshot
received from the leader is saved, its WAL marker not yet written),
``before-compact`` (applying a compaction).

``FLAGSTAFF_TEST_BUG`` names one deliberately wrong behaviour, for proving
that the robustness suite catches it (never set it anywhere else):

* ``stale-follower-reads`` — a follower answers linearizable reads from its
  local state, skipping the ReadIndex barrier.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from dataclasses import dataclass

SITES = frozenset({
    "before-wal-fsync",
    "after-wal-fsync",
    "before-apply",
    "after-apply",
    "before-snapshot-save",
    "snapshot-saved-before-marker",
    "snapshot-install-saved",
    "before-compact",
})

BUGS = frozenset({"stale-follower-reads"})


class FailpointPanic(RuntimeError):
    """Raised by a failpoint whose action is ``panic``."""


@dataclass
class Failpoint:
    """One armed site: what to do, and when (every hit, the N-th hit, or with a probability)."""

    name: str
    action: str
    sleep_ms: float = 0.0
    nth: int = 0
    probability: float = 1.0
    hits: int = 0


_SPEC = re.compile(r"^(crash|panic|sleep\((\d+(?:\.\d+)?)\))(?:@(\d+)|%(\d*\.?\d+))?$")


def parse(spec: str) -> dict[str, Failpoint]:
    """Parse a ``FLAGSTAFF_FAILPOINTS`` value; ValueError names the bad part."""
    armed: dict[str, Failpoint] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, action = part.partition(":")
        if not sep:
            name, sep, action = part.partition("=")
        if name not in SITES:
            raise ValueError(f"unknown failpoint {name!r} (known: {', '.join(sorted(SITES))})")
        m = _SPEC.match(action)
        if m is None:
            raise ValueError(f"bad failpoint action {action!r} for {name}")
        kind = m.group(1).split("(")[0]
        armed[name] = Failpoint(
            name,
            kind,
            sleep_ms=float(m.group(2) or 0),
            nth=int(m.group(3) or 0),
            probability=float(m.group(4)) if m.group(4) else 1.0,
        )
    return armed


_armed: dict[str, Failpoint] = parse(os.environ.get("FLAGSTAFF_FAILPOINTS", ""))
_rng = random.Random(int(os.environ.get("FLAGSTAFF_FAILPOINTS_SEED", "0")))

ACTIVE: bool = bool(_armed)
"""Whether any failpoint is armed (call sites test this before calling :func:`hit`)."""

TEST_BUG: str = os.environ.get("FLAGSTAFF_TEST_BUG", "")
if TEST_BUG and TEST_BUG not in BUGS:
    raise ValueError(f"unknown FLAGSTAFF_TEST_BUG {TEST_BUG!r} (known: {', '.join(sorted(BUGS))})")

STALE_FOLLOWER_READS: bool = TEST_BUG == "stale-follower-reads"


def hit(name: str) -> None:
    """Pass the site ``name``: do what its failpoint says, if it is armed and due."""
    fp = _armed.get(name)
    if fp is None:
        return
    fp.hits += 1
    if fp.nth and fp.hits != fp.nth:
        return
    if fp.probability < 1.0 and _rng.random() >= fp.probability:
        return
    if fp.action == "sleep":
        time.sleep(fp.sleep_ms / 1000)
    elif fp.action == "panic":
        raise FailpointPanic(f"failpoint {name} (hit {fp.hits})")
    else:
        os.write(2, f"failpoint {name}: crash (hit {fp.hits})\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)


def arm(spec: str) -> None:
    """Replace the armed failpoints (for in-process tests)."""
    global ACTIVE, _armed
    _armed = parse(spec)
    ACTIVE = bool(_armed)
