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
* after a full collection that leaves more than :data:`FREEZE_ABOVE` objects
  in the oldest generation, those objects -- every one of them reachable a
  moment ago -- are frozen too, so later full collections only walk what was
  allocated since.

Frozen objects are still freed by reference counting when they are dropped
(a compacted revision, a deleted key), which is how the key space's objects
die: they hold no reference cycles. What freezing gives up is the collection
of *cycles* among frozen objects; the only candidates are the few request
objects in flight at the instant of a freeze, which happens once per
:data:`FREEZE_ABOVE` surviving objects (tens of thousands of writes).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

FREEZE_ABOVE = 50_000
"""Objects left in the oldest generation by a full collection above which they are frozen."""


def install(*, freeze_above: int = FREEZE_ABOVE) -> Callable[[], None]:
    """Freeze what is alive now, and the survivors of large full collections from now on.

    Returns a function that stops the second part (what is frozen stays frozen).
    """
    gc.collect()
    gc.freeze()

    def after_collection(phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        # The collection is over (its lists are consistent again): freezing only moves them.
        if len(gc.get_objects(2)) > freeze_above:
            gc.freeze()

    gc.callbacks.append(after_collection)
    return lambda: gc.callbacks.remove(after_collection)
