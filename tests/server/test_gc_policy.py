"""The member's garbage-collector policy (``consensus.server.gc_policy``).

Run in a fresh interpreter each: the policy changes the process's collector.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import gc, json
from consensus.server import gc_policy

class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic collector frees it

kept = [[i] for i in range(5000)]          # alive at start-up
gc_policy.install(freeze_after=0.0)
at_start = gc.get_freeze_count()
later = [[i] for i in range(5000)]          # a growing store: survives the next full collection
gc.collect()
after_large = gc.get_freeze_count()
garbage = [Node() for _ in range(1000)]
del garbage
found = gc.collect()
print(json.dumps({"at_start": at_start, "after_large": after_large, "cycles_collected": found,
                  "young_after": len(gc.get_objects(2))}))
"""


def test_survivors_are_frozen_and_new_cycles_are_still_collected() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    r = json.loads(out)
    assert r["at_start"] >= 5000  # what start-up left alive is frozen
    assert r["after_large"] >= r["at_start"] + 5000  # survivors of a (long) full collection too
    assert r["cycles_collected"] >= 1000  # garbage cycles made afterwards are still freed
    assert r["young_after"] < 2000  # full collections walk only what came since
