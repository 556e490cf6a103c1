"""Reconnection delays: exponential backoff with jitter, reset after a healthy connection."""

from __future__ import annotations

import random


class Backoff:
    """Jittered exponential backoff ("equal jitter"): attempt n waits between d/2 and d,
    d = min(maximum, initial * 2**n). The jitter spreads reconnecting clients out so a
    restarted web process is not hit by all of them at the same instant."""

    def __init__(self, initial: float = 0.2, maximum: float = 30.0,
                 rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        ceiling = min(self.maximum, self.initial * float(2 ** min(self.attempt, 30)))
        self.attempt += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """Back to the initial delay (after a connection that reached ``subscribed``)."""
        self.attempt = 0
