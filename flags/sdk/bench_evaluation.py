"""Evaluations per second through three SDKs, single thread, offline, in one run.

The flags are the engine benchmark's (``flags.engine.bench``): a boolean flag
with a 25% rollout, and a string flag with 5 rules (ends_with, in+in, semver,
a numeric comparison with a 50/50 rollout, starts_with) that the measured
contexts fall through. The same flags are written in each SDK's own format:

- Flagstaff: ``Client(offline=True, bootstrap=...)``, ``variation``;
- LaunchDarkly (``launchdarkly-server-sdk``): its file data source, same
  rollout weights and clauses, ``variation`` with prebuilt ``Context`` objects;
- Unleash (``UnleashClient``): bootstrapped toggles; the rollout is a
  ``flexibleRollout`` strategy at 25% (``is_enabled``); the 5-rule flag is 5
  constrained strategies with strategy variants (``get_variant``), the closest
  Unleash has to ordered rules serving a string.

Each case evaluates distinct context keys (every rollout hashes) and keeps
the best of ``repeat`` runs in CPU time (``time.process_time``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flags.engine.bench import FIVE_RULE_FLAG, ROLLOUT_FLAG

FALLS_THROUGH: dict[str, Any] = {"email": "someone@example.com", "country": "FR", "plan": "free",
                                 "app_version": "3.1.9", "stats": {"searches": 10},
                                 "name": "alpha"}


def _rate(fn: Callable[[Any], object], inputs: Sequence[Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for item in inputs:
            fn(item)
        best = min(best, time.process_time() - start)
    return len(inputs) / max(best, 1e-9)


def flagstaff_rates(n: int, repeat: int) -> dict[str, float]:
    """The Flagstaff SDK (offline client; evaluation-count bookkeeping off, as offline)."""
    from flags.sdk import Client

    client = Client("http://127.0.0.1:9", "fs_sdk_bench", "bench/production", offline=True,
                    bootstrap={"flags": {"new-checkout": ROLLOUT_FLAG,
                                         "search-ranking": FIVE_RULE_FLAG}})
    plain = [{"key": f"user-{i}"} for i in range(n)]
    rich = [{"key": f"user-{i}", **FALLS_THROUGH} for i in range(n)]
    assert client.variation("search-ranking", rich[0], None) == "classic"
    return {
        "rollout": _rate(lambda c: client.variation("new-checkout", c, False), plain, repeat),
        "5 rules": _rate(lambda c: client.variation("search-ranking", c, "x"), rich, repeat),
    }


def _ld_clause(attribute: str, op: str, values: list[Any]) -> dict[str, Any]:
    return {"contextKind": "user", "attribute": attribute, "op": op, "values": values,
            "negate": False}


LD_FLAGS: dict[str, Any] = {"flags": {
    "new-checkout": {
        "key": "new-checkout", "version": 1, "on": True, "variations": [True, False],
        "offVariation": 1, "salt": "5f1d0c9e", "targets": [], "rules": [], "prerequisites": [],
        "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 25_000},
                                                   {"variation": 1, "weight": 75_000}]}},
    },
    "search-ranking": {
        "key": "search-ranking", "version": 1, "on": True,
        "variations": ["classic", "ml-v1", "ml-v2"], "offVariation": 0, "salt": "a7c2",
        "targets": [], "prerequisites": [], "fallthrough": {"variation": 0},
        "rules": [
            {"id": "staff", "variation": 2,
             "clauses": [_ld_clause("email", "endsWith", ["@flagstaff.dev"])]},
            {"id": "countries", "variation": 1,
             "clauses": [_ld_clause("country", "in", ["NZ", "AU", "IE"]),
                         _ld_clause("plan", "in", ["pro", "team"])]},
            {"id": "new-apps", "variation": 1,
             "clauses": [_ld_clause("app_version", "semVerGreaterThan", ["3.2.0"])]},
            {"id": "heavy-users",
             "clauses": [_ld_clause("/stats/searches", "greaterThanOrEqual", [1000])],
             "rollout": {"variations": [{"variation": 1, "weight": 50_000},
                                        {"variation": 2, "weight": 50_000}]}},
            {"id": "beta-names", "variation": 2,
             "clauses": [_ld_clause("name", "startsWith", ["beta-"])]},
        ],
    },
}}


def launchdarkly_rates(n: int, repeat: int, workdir: Path) -> dict[str, float]:
    """``launchdarkly-server-sdk`` with the file data source (no network)."""
    from ldclient import Context, LDClient
    from ldclient.config import Config
    from ldclient.integrations import Files

    path = workdir / "ld-flags.json"
    path.write_text(json.dumps(LD_FLAGS))
    client = LDClient(config=Config("sdk-bench", update_processor_class=Files.new_data_source(
        paths=[str(path)]), send_events=False, diagnostic_opt_out=True))
    try:
        plain = [Context.create(f"user-{i}") for i in range(n)]
        builder = []
        for i in range(n):
            b = Context.builder(f"user-{i}")
            for name, value in FALLS_THROUGH.items():
                b.set(name, value)
            builder.append(b.build())
        assert client.variation("search-ranking", builder[0], None) == "classic"
        return {
            "rollout": _rate(lambda c: client.variation("new-checkout", c, False), plain, repeat),
            "5 rules": _rate(lambda c: client.variation("search-ranking", c, "x"), builder,
                             repeat),
        }
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _unleash_constraint(name: str, operator: str, values: list[str]) -> dict[str, Any]:
    if operator in ("SEMVER_GT", "NUM_GTE"):
        return {"contextName": name, "operator": operator, "value": values[0],
                "inverted": False, "caseInsensitive": False}
    return {"contextName": name, "operator": operator, "values": values, "inverted": False,
            "caseInsensitive": False}


def _unleash_strategy(constraints: list[dict[str, Any]], variant: str | None,
                      rollout: int = 100) -> dict[str, Any]:
    strategy: dict[str, Any] = {
        "name": "flexibleRollout",
        "parameters": {"rollout": str(rollout), "stickiness": "userId",
                       "groupId": "search-ranking"},
        "constraints": constraints,
    }
    if variant is not None:
        strategy["variants"] = [{"name": variant, "weight": 1000, "stickiness": "userId",
                                 "weightType": "variable"}]
    return strategy


UNLEASH_FEATURES: dict[str, Any] = {"version": 1, "features": [
    {"name": "new-checkout", "enabled": True, "strategies": [
        {"name": "flexibleRollout",
         "parameters": {"rollout": "25", "stickiness": "userId", "groupId": "new-checkout"}}]},
    {"name": "search-ranking", "enabled": True, "strategies": [
        _unleash_strategy([_unleash_constraint("email", "STR_ENDS_WITH", ["@flagstaff.dev"])],
                          "ml-v2"),
        _unleash_strategy([_unleash_constraint("country", "IN", ["NZ", "AU", "IE"]),
                           _unleash_constraint("plan", "IN", ["pro", "team"])], "ml-v1"),
        _unleash_strategy([_unleash_constraint("app_version", "SEMVER_GT", ["3.2.0"])],
                          "ml-v1"),
        _unleash_strategy([_unleash_constraint("searches", "NUM_GTE", ["1000"])], "ml-v2", 50),
        _unleash_strategy([_unleash_constraint("name", "STR_STARTS_WITH", ["beta-"])],
                          "ml-v2"),
    ]},
]}


def unleash_rates(n: int, repeat: int, workdir: Path) -> dict[str, float]:
    """``UnleashClient`` bootstrapped from a dict, never fetching."""
    from UnleashClient import UnleashClient  # type: ignore[attr-defined]
    from UnleashClient.cache import FileCache

    logging.getLogger("UnleashClient").setLevel(logging.ERROR)
    cache = FileCache("flagstaff-bench", directory=str(workdir))
    cache.bootstrap_from_dict(UNLEASH_FEATURES)
    client = UnleashClient("http://127.0.0.1:9/api", "flagstaff-bench", disable_metrics=True,
                           disable_registration=True, cache=cache)
    client.initialize_client(fetch_toggles=False)
    try:
        plain = [{"userId": f"user-{i}"} for i in range(n)]
        props = {k: str(v) for k, v in FALLS_THROUGH.items() if k != "stats"}
        props["searches"] = str(FALLS_THROUGH["stats"]["searches"])
        rich = [{"userId": f"user-{i}", "properties": props} for i in range(n)]
        assert client.get_variant("search-ranking", rich[0])["enabled"] is False
        return {
            "rollout": _rate(lambda c: client.is_enabled("new-checkout", c), plain, repeat),
            "5 rules": _rate(lambda c: client.get_variant("search-ranking", c), rich, repeat),
        }
    finally:
        client.destroy()


def run(n: int = 50_000, repeat: int = 3) -> dict[str, dict[str, float]]:
    """Evaluations per second by SDK and case (``rollout``, ``5 rules``)."""
    with tempfile.TemporaryDirectory(prefix="flagstaff-bench-") as tmp:
        workdir = Path(tmp)
        return {
            "flagstaff": flagstaff_rates(n, repeat),
            "launchdarkly-server-sdk": launchdarkly_rates(n, repeat, workdir),
            "UnleashClient": unleash_rates(n, repeat, workdir),
        }
