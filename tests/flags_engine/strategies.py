"""Hypothesis strategies for flag documents, segments and contexts (valid and arbitrary)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from flags.engine.document import WEIGHT_SCALE, Operator


def examples(n: int) -> settings:
    """Settings for this package's property tests: ``n`` examples, no deadline (CI boxes are
    shared), generation allowed to be slow (documents are big)."""
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


flag_keys = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,15}", fullmatch=True)
context_keys = st.text(min_size=1, max_size=12)
attributes = st.sampled_from([
    "key", "kind", "email", "country", "n", "version", "when", "tags", "a.b", "/address/city",
    "/a~1b/c~0d", "name",
])
scalars = st.one_of(
    st.text(max_size=8), st.integers(-(2**53), 2**53), st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    st.none() | scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=12,
)
"""Arbitrary JSON values (what a context attribute or a json variation may hold)."""

PATTERNS = ["^beta-", "@example\\.com$", "[0-9]{3}", "^(a|b)+c?$", "x.*y", "^\\w+@\\w+\\.org$",
            "", "(?:\\d{1,3}\\.){3}\\d{1,3}", "[^a-z]", "\\u00e9t\\u00e9"]
SEMVERS = ["1.0.0", "1.2.3", "2.0.0-rc.1", "2.0.0-rc.1+build.5", "0.9", "3", "1.2.3-alpha.beta"]
INSTANTS: list[Any] = ["2024-01-01", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00.5+02:00",
                       0, 1714564800000, -1.5]
SEGMENT_KEYS = ["beta", "staff", "missing", "broken"]

_values_by_operator: dict[Operator, st.SearchStrategy[Any]] = {
    Operator.IN: scalars,
    Operator.NOT_IN: scalars,
    Operator.STARTS_WITH: st.text(max_size=5),
    Operator.ENDS_WITH: st.text(max_size=5),
    Operator.CONTAINS: st.text(max_size=5),
    Operator.MATCHES: st.sampled_from(PATTERNS),
    Operator.LT: st.integers(-100, 100) | st.floats(-1e6, 1e6),
    Operator.LTE: st.integers(-100, 100),
    Operator.GT: st.integers(-100, 100),
    Operator.GTE: st.floats(-1e6, 1e6),
    Operator.SEMVER_EQ: st.sampled_from(SEMVERS),
    Operator.SEMVER_LT: st.sampled_from(SEMVERS),
    Operator.SEMVER_GT: st.sampled_from(SEMVERS),
    Operator.BEFORE: st.sampled_from(INSTANTS),
    Operator.AFTER: st.sampled_from(INSTANTS),
    Operator.SEGMENT_MATCH: st.sampled_from(SEGMENT_KEYS),
}


@st.composite
def clauses(draw: st.DrawFn, in_segment: bool = False) -> dict[str, Any]:
    ops = [o for o in Operator if not (in_segment and o is Operator.SEGMENT_MATCH)]
    op = draw(st.sampled_from(ops))
    clause: dict[str, Any] = {"operator": op.value,
                              "values": draw(st.lists(_values_by_operator[op], min_size=1,
                                                      max_size=3))}
    if op is not Operator.SEGMENT_MATCH or draw(st.booleans()):
        clause["attribute"] = draw(attributes)
    if draw(st.booleans()):
        clause["negate"] = draw(st.booleans())
    return clause


@st.composite
def rollouts(draw: st.DrawFn, n: int) -> dict[str, Any]:
    chosen = draw(st.permutations(range(n)))[: draw(st.integers(1, n))]
    cuts = sorted(draw(st.lists(st.integers(0, WEIGHT_SCALE), min_size=len(chosen) - 1,
                                max_size=len(chosen) - 1)))
    bounds = [0, *cuts, WEIGHT_SCALE]
    rollout: dict[str, Any] = {"variations": [
        {"variation": v, "weight": bounds[i + 1] - bounds[i]} for i, v in enumerate(chosen)]}
    if draw(st.booleans()):
        rollout["bucket_by"] = draw(attributes)
    if draw(st.booleans()):
        rollout["seed"] = draw(st.integers(-(2**53) + 1, 2**53 - 1))
    return rollout


def _serve(n: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda v: {"variation": v}, st.integers(0, n - 1)),
        rollouts(n).map(lambda r: {"rollout": r}),
    )


def _canonical(value: Any) -> str:
    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    return json.dumps(norm(value), sort_keys=True)


@st.composite
def valid_flags(draw: st.DrawFn) -> dict[str, Any]:
    """Flag documents the validator accepts (every optional field sometimes present)."""
    kind = draw(st.sampled_from(["boolean", "string", "number", "json"]))
    if kind == "boolean":
        variations: list[Any] = draw(st.permutations([True, False]))
    elif kind == "string":
        variations = draw(st.lists(st.text(max_size=6), min_size=1, max_size=4, unique=True))
    elif kind == "number":
        variations = draw(st.lists(st.integers(-1000, 1000), min_size=1, max_size=4, unique=True))
    else:
        variations = draw(st.lists(json_values, min_size=1, max_size=4, unique_by=_canonical))
    n = len(variations)
    doc: dict[str, Any] = {
        "key": draw(flag_keys), "kind": kind, "variations": variations, "on": draw(st.booleans()),
        "fallthrough": draw(_serve(n)),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "name": st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), max_size=20),
        "description": st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"]) | st.just("\n"),
                               max_size=30),
        "off_variation": st.none() | st.integers(0, n - 1),
        "salt": st.text(alphabet="0123456789abcdef", max_size=32),
        "tags": st.lists(st.text(alphabet="abc-", min_size=1, max_size=5), unique=True, max_size=3),
        "owner": st.none() | st.just("alice@example.com"),
        "temporary": st.booleans(),
        "created_at": st.none() | st.just("2024-05-01T12:00:00Z"),
        "updated_at": st.just("2024-05-02T08:30:00.123+02:00"),
        "version": st.integers(0, 10**6),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            doc[name] = draw(strategy)
    if draw(st.booleans()):
        target_variations = draw(st.permutations(range(n)))[: draw(st.integers(0, n))]
        all_keys = draw(st.lists(context_keys, unique=True, max_size=6))
        targets = []
        for i, v in enumerate(target_variations):
            targets.append({"variation": v, "values": all_keys[i::len(target_variations)]})
        doc["targets"] = targets
    if draw(st.booleans()):
        rules = []
        for i in range(draw(st.integers(0, 4))):
            rule: dict[str, Any] = {"id": f"rule-{i}",
                                    "clauses": draw(st.lists(clauses(), min_size=1, max_size=3))}
            rule.update(draw(_serve(n)))
            rules.append(rule)
        doc["rules"] = rules
    return doc


@st.composite
def valid_segments(draw: st.DrawFn) -> dict[str, Any]:
    """Segment documents the validator accepts."""
    keys = draw(st.lists(context_keys, unique=True, max_size=6))
    split = draw(st.integers(0, len(keys)))
    doc: dict[str, Any] = {"key": draw(st.sampled_from(SEGMENT_KEYS[:2]))}
    if draw(st.booleans()):
        doc["included"] = keys[:split]
    if draw(st.booleans()):
        doc["excluded"] = keys[split:]
    if draw(st.booleans()):
        doc["rules"] = [
            {"id": f"s{i}", "clauses": draw(st.lists(clauses(in_segment=True), min_size=1,
                                                      max_size=2))}
            for i in range(draw(st.integers(0, 3)))
        ]
    if draw(st.booleans()):
        doc["name"] = "Beta testers <b>&amp;</b>"
    return doc


contexts = st.one_of(
    st.fixed_dictionaries(
        {"key": context_keys},
        optional={
            "kind": st.sampled_from(["user", "org", "device"]) | json_values,
            "email": st.sampled_from(["a@example.com", "beta-x@example.org", "x"]) | json_values,
            "country": json_values,
            "n": st.integers() | st.floats() | json_values,
            "version": st.sampled_from(SEMVERS) | json_values,
            "when": st.sampled_from(INSTANTS) | json_values,
            "tags": st.lists(scalars | json_values, max_size=4),
            "a.b": json_values,
            "address": st.dictionaries(st.sampled_from(["city", "zip"]), json_values) | json_values,
            "a/b": st.dictionaries(st.just("c~d"), json_values),
            "name": json_values,
        },
    ),
    json_values,
    st.dictionaries(st.text(max_size=4), json_values, max_size=5),
)
"""Contexts: mostly well-formed with arbitrary attribute values, some arbitrary JSON."""
