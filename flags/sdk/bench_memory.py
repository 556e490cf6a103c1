"""Memory per SDK client holding 1,000 flags: Python heap (tracemalloc) and process RSS.

The flags are the engine benchmark's two shapes, alternating (500 boolean
flags with a 25% rollout, 500 string flags with 5 rules), each with its own
key and salt, held by offline ``Client`` instances (the cache a streaming
client holds: documents plus their compiled form). Run in a fresh process so
that nothing else is counted.
"""

from __future__ import annotations

import copy
import gc
import json
import tracemalloc
from typing import Any

from flags.engine.bench import FIVE_RULE_FLAG, ROLLOUT_FLAG


def thousand_flags() -> dict[str, Any]:
    """1,000 distinct flag documents (the bootstrap a client would hold)."""
    flags: dict[str, Any] = {}
    for i in range(1000):
        doc = copy.deepcopy(ROLLOUT_FLAG if i % 2 == 0 else FIVE_RULE_FLAG)
        doc["key"], doc["salt"] = f"flag-{i:04d}", f"salt-{i:04d}"
        flags[doc["key"]] = doc
    return flags


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        import os

        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_held_so_far = [0]


def _hold(text: str, clients: int) -> list[Any]:
    """``clients`` offline clients, each parsing its own copy of the documents.

    Every client's salts differ (as two environments' flags would), so the
    process-wide compilation cache shares nothing between them.
    """
    from flags.sdk import Client

    out = []
    for _ in range(clients):
        _held_so_far[0] += 1
        unique = text.replace('"salt": "salt-', f'"salt": "c{_held_so_far[0]}-salt-')
        out.append(Client("http://127.0.0.1:9", "fs_sdk_bench", "bench/production",
                          offline=True, bootstrap=json.loads(unique)))
    return out


def run(clients: int = 10) -> dict[str, float]:
    """Bytes per client (heap and RSS) for ``clients`` clients of 1,000 flags each.

    Each client parses its own copy of the documents (as from a snapshot
    message), so the documents count as well as their compiled form. RSS is
    measured in a separate pass without tracemalloc (which costs memory itself).
    """
    import flags.sdk  # noqa: F401 (imports and their caches are not the clients' cost)

    text = json.dumps({"flags": thousand_flags()})
    _hold(text, 1)  # warm up: compiled regexes, interned strings
    gc.collect()
    rss_before = _rss_bytes()
    held = _hold(text, clients)
    gc.collect()
    rss_after = _rss_bytes()
    assert all(len(c.all_flags({"key": "u"})) == 1000 for c in held)
    del held
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = _hold(text, clients)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(held) == clients
    return {"heap_bytes_per_client": (after - before) / clients,
            "rss_bytes_per_client": (rss_after - rss_before) / clients,
            "clients": float(clients)}
