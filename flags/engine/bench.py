"""The engine's micro-benchmark: evaluations per second of typical flags, single thread.

Run it with ``python -m flags.engine.bench`` (``--n`` evaluations per case,
``--json`` for machine-readable output). Each case evaluates a compiled flag for
distinct contexts (distinct keys, so rollouts hash every time) and reports the best
of ``--repeat`` runs, timed in CPU time (``time.process_time``) so that other
processes on a shared machine disturb it less. The SDK's benchmark can put these
next to other SDKs' numbers. No test asserts on them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from flags.engine.evaluation import compile_flag, evaluate

ROLLOUT_FLAG: dict[str, Any] = {
    "key": "new-checkout", "kind": "boolean", "variations": [True, False], "on": True,
    "off_variation": 1, "salt": "5f1d0c9e",
    "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 25_000},
                                               {"variation": 1, "weight": 75_000}]}},
}

FIVE_RULE_FLAG: dict[str, Any] = {
    "key": "search-ranking", "kind": "string", "variations": ["classic", "ml-v1", "ml-v2"],
    "on": True, "off_variation": 0, "salt": "a7c2",
    "rules": [
        {"id": "staff", "clauses": [
            {"attribute": "email", "operator": "ends_with", "values": ["@flagstaff.dev"]}],
         "variation": 2},
        {"id": "countries", "clauses": [
            {"attribute": "country", "operator": "in", "values": ["NZ", "AU", "IE"]},
            {"attribute": "plan", "operator": "in", "values": ["pro", "team"]}],
         "variation": 1},
        {"id": "new-apps", "clauses": [
            {"attribute": "app_version", "operator": "semver_gt", "values": ["3.2.0"]}],
         "variation": 1},
        {"id": "heavy-users", "clauses": [
            {"attribute": "/stats/searches", "operator": "gte", "values": [1000]}],
         "rollout": {"variations": [{"variation": 1, "weight": 50_000},
                                    {"variation": 2, "weight": 50_000}]}},
        {"id": "beta-names", "clauses": [
            {"attribute": "name", "operator": "starts_with", "values": ["beta-"]}],
         "variation": 2},
    ],
    "fallthrough": {"variation": 0},
}


def _contexts(n: int, extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": f"user-{i}", **extra} for i in range(n)]


def _rate(fn: Callable[[dict[str, Any]], object], contexts: Sequence[dict[str, Any]],
          repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for ctx in contexts:
            fn(ctx)
        best = min(best, time.process_time() - start)
    return len(contexts) / best


def run(n: int = 200_000, repeat: int = 3) -> dict[str, float]:
    """Evaluations per second for each case, by case name."""
    rollout = compile_flag(ROLLOUT_FLAG)
    five = compile_flag(FIVE_RULE_FLAG)
    assert rollout.ok and five.ok
    falls_through = {"email": "someone@example.com", "country": "FR", "plan": "free",
                     "app_version": "3.1.9", "stats": {"searches": 10}, "name": "alpha"}
    hits_rule_4 = dict(falls_through, stats={"searches": 5000})
    return {
        "boolean flag, 25% rollout": _rate(rollout.evaluate, _contexts(n, {}), repeat),
        "5-rule flag, no rule matches (fallthrough)": _rate(
            five.evaluate, _contexts(n, falls_through), repeat),
        "5-rule flag, 4th rule (a rollout) matches": _rate(
            five.evaluate, _contexts(n, hits_rule_4), repeat),
        "boolean flag, off": _rate(
            compile_flag(dict(ROLLOUT_FLAG, on=False)).evaluate, _contexts(n, {}), repeat),
        "uncompiled: evaluate(document, ...) of the 5-rule flag": _rate(
            lambda ctx: evaluate(FIVE_RULE_FLAG, ctx), _contexts(max(n // 100, 100),
                                                                 falls_through), repeat),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints evaluations per second per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200_000, help="evaluations per case")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best is kept)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    rates = run(args.n, args.repeat)
    if args.json:
        print(json.dumps(rates, indent=2))
    else:
        print(f"Python {sys.version.split()[0]}, {args.n} evaluations per case, best of {args.repeat}")
        for name, rate in rates.items():
            print(f"  {rate:>12,.0f} evaluations/s   {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
