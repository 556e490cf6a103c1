"""Evaluation counts: how often each flag was evaluated, sent to the platform in batches.

``POST /api/v1/sdk/evaluations/`` with the SDK key as a bearer token and
``{"environment", "counts": {flag: n}, "start", "end"}`` (unix seconds); the
platform answers 202 and uses the counts to tell flags still in use from stale
ones. A platform without the endpoint (404) or any other failure costs the
batch, never the application: reporting is best effort.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request

log = logging.getLogger("flags.sdk")

EVALUATIONS_PATH = "/api/v1/sdk/evaluations/"


class EvaluationCounter:
    """Per-flag evaluation counts since the last ``drain``; safe from any thread."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._start = time.time()

    def add(self, flag: str) -> None:
        """Count one evaluation of ``flag``."""
        with self._lock:
            counts = self._counts
            counts[flag] = counts.get(flag, 0) + 1

    def drain(self) -> tuple[dict[str, int], float, float]:
        """The counts since the last drain, with the period's start and end; resets them."""
        with self._lock:
            counts, self._counts = self._counts, {}
            start, self._start = self._start, time.time()
        return counts, start, self._start


def post_counts(base_url: str, sdk_key: str, environment: str, counts: dict[str, int],
                start: float, end: float, timeout: float = 5.0) -> int | None:
    """Send one batch (blocking); the HTTP status, or None when the platform was unreachable."""
    body = json.dumps({"environment": environment, "counts": counts,
                       "start": int(start), "end": int(end)}).encode()
    request = urllib.request.Request(
        base_url.rstrip("/") + EVALUATIONS_PATH, data=body, method="POST",
        headers={"Authorization": f"Bearer {sdk_key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            log.debug("flagstaff: the platform has no evaluation-count endpoint (404); dropped")
        else:
            log.info("flagstaff: evaluation counts refused (HTTP %d); dropped", exc.code)
        return int(exc.code)
    except (OSError, ValueError) as exc:
        log.info("flagstaff: could not send evaluation counts (%s); dropped", exc)
        return None


async def report_periodically(counter: EvaluationCounter, base_url: str, sdk_key: str,
                              environment: str, interval: float) -> None:
    """Send the counts every ``interval`` seconds until cancelled (the owner flushes last)."""
    import asyncio

    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(flush, counter, base_url, sdk_key, environment)


def flush(counter: EvaluationCounter, base_url: str, sdk_key: str, environment: str,
          timeout: float = 5.0) -> int | None:
    """Send what was counted since the last flush (nothing when nothing was evaluated)."""
    counts, start, end = counter.drain()
    if not counts:
        return None
    return post_counts(base_url, sdk_key, environment, counts, start, end, timeout)
