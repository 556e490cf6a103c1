"""The member's garbage-collector policy: keep full collections short as the key space grows.

CPython's cyclic collector walks every tracked object in a full (generation 2)
collection. A member keeps its whole key space, its history and its audit
trail in memory, about five tracked objects per write, so on a busy member a
full collection walks hundreds of thousands of objects and stops the event
loop for tens to hundreds of milliseconds: heartbeats, acknowledgements and
watch events all wait behind it (the p99 of watch latency showed it).

The policy (:func:`install`):

* after start-up (the recovered key space loaded), everything alive is moved
  to the collector's permanent generation (``gc.freeze``);
* after a full collection that took more than :data:`FREEZE_AFTER_SECONDS` of
  CPU time, the objects it left -- every one of them reachable a moment ago --
  are frozen too, so later full collections only walk what was allocated
  since, and stay short.

Frozen objects are still freed by reference counting when they are dropped
(a compacted revision, a deleted key), which is how the key space's objects
die: they hold no reference cycles. What freezing gives up is the collection
of *cycles* among frozen objects; the only candidates are the few request
objects in flight at the instant of a freeze, which happens only after a
long full collection (tens of thousands of writes apart).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

FREEZE_AFTER_SECONDS = 0.005
"""CPU time of one full collection above which its survivors are frozen."""

LOG_AFTER_SECONDS = 0.1
"""Wall time of one full collection above which it is logged (it stopped the event loop that long)."""


def install(*, freeze_after: float = FREEZE_AFTER_SECONDS) -> Callable[[], None]:
    """Freeze what is alive now, and the survivors of long full collections from now on.

    Returns a function that stops the second part (what is frozen stays frozen).
    """
    gc.collect()
    gc.freeze()
    started = [0.0, 0.0]

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[0] = time.thread_time()
            started[1] = time.perf_counter()
        else:
            took = time.thread_time() - started[0]
            wall = time.perf_counter() - started[1]
            if took > freeze_after:
                # The collection is over (its lists are consistent again): freezing only moves them.
                gc.freeze()
            if wall > LOG_AFTER_SECONDS:
                log.warning("a full garbage collection stopped the loop for %.0f ms (%.0f ms of CPU, "
                            "%d objects collected)", wall * 1000, took * 1000, info.get("collected", 0))

    gc.callbacks.append(on_collection)
    return lambda: gc.callbacks.remove(on_collection)
