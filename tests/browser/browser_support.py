"""Helpers of the browser tests."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any


def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a worker thread, outside Playwright's event loop; its result.

    Playwright's sync API runs an event loop in the test's thread, where Django's
    ORM and the core gateway's blocking calls refuse to run.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()
