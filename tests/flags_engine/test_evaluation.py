"""Evaluation: reasons, errors, never raising, compiled and uncompiled paths agreeing."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flags.engine import (
    CompiledFlag,
    ErrorKind,
    EvaluationResult,
    FlagKind,
    Reason,
    ReasonKind,
    compile_flag,
    compile_segment,
    error_result,
    evaluate,
)

from .strategies import contexts, examples, json_values, valid_flags, valid_segments

FLAG: dict[str, Any] = {
    "key": "f", "kind": "string", "variations": ["a", "b", "c"], "on": True, "off_variation": 0,
    "targets": [{"variation": 2, "values": ["vip"]}],
    "rules": [
        {"id": "beta", "clauses": [{"operator": "segment_match", "values": ["beta"]}],
         "variation": 1},
        {"id": "nz", "clauses": [{"attribute": "country", "operator": "in", "values": ["NZ"]}],
         "rollout": {"variations": [{"variation": 0, "weight": 50_000},
                                    {"variation": 1, "weight": 50_000}]}},
    ],
    "fallthrough": {"variation": 0},
}
SEGMENTS = {"beta": {"key": "beta", "included": ["tester"]},
            "staff": {"key": "staff", "rules": [{"id": "s", "clauses": [
                {"attribute": "email", "operator": "ends_with", "values": ["@x.dev"]}]}]},
            "broken": {"key": "broken", "included": 3}}


def test_every_reason() -> None:
    flag = compile_flag(FLAG)
    assert flag.ok and flag.key == "f" and flag.kind is FlagKind.STRING
    assert flag.segment_keys == frozenset({"beta"})
    assert flag.evaluate({"key": "vip"}, SEGMENTS).reason.kind is ReasonKind.TARGET_MATCH
    r = flag.evaluate({"key": "tester"}, SEGMENTS)
    assert (r.value, r.variation_index, r.reason) == ("b", 1, Reason(ReasonKind.RULE_MATCH, 0, "beta"))
    r = flag.evaluate({"key": "x", "country": "NZ"}, SEGMENTS)
    assert r.reason == Reason(ReasonKind.RULE_MATCH, 1, "nz") and r.value in ("a", "b")
    assert flag.evaluate({"key": "x"}, SEGMENTS).reason.kind is ReasonKind.FALLTHROUGH
    off = compile_flag(dict(FLAG, on=False))
    assert off.evaluate({"key": "vip"}).to_json() == {
        "value": "a", "variation": 0, "reason": {"kind": "OFF"}}


def test_results_for_fixed_outcomes_are_shared() -> None:
    flag = compile_flag(FLAG)
    assert flag.evaluate({"key": "vip"}) is flag.evaluate({"key": "vip", "x": 1})


def test_reason_json() -> None:
    assert Reason(ReasonKind.RULE_MATCH, 2, "r").to_json() == {
        "kind": "RULE_MATCH", "rule_index": 2, "rule_id": "r"}
    assert Reason.error(ErrorKind.WRONG_TYPE).to_json() == {
        "kind": "ERROR", "error_kind": "WRONG_TYPE"}
    result = error_result(ErrorKind.FLAG_NOT_FOUND, default=3)
    assert result.is_error and result.to_json() == {
        "value": 3, "variation": None,
        "reason": {"kind": "ERROR", "error_kind": "FLAG_NOT_FOUND"}}


def test_malformed_flags_compile_and_keep_their_errors() -> None:
    flag = compile_flag(dict(FLAG, variations="abc"))
    assert not flag.ok and flag.errors[0].field == "variations"
    assert flag.kind is FlagKind.STRING and flag.key == "f"
    r = flag.evaluate({"key": "k"}, default="d")
    assert (r.value, r.variation_index, r.reason.error_kind) == ("d", None, ErrorKind.MALFORMED_FLAG)
    assert compile_flag(None).errors and compile_flag([1]).key is None
    odd = compile_flag({"key": ["x"], "kind": ["boolean"], "variations": {}})
    assert odd.key is None and odd.kind is None and not odd.ok


def test_segments_may_be_documents_compiled_segments_or_absent() -> None:
    flag = compile_flag(FLAG)
    compiled = {k: compile_segment(v) for k, v in SEGMENTS.items()}
    for segs in (SEGMENTS, compiled):
        assert flag.evaluate({"key": "tester"}, segs).variation_index == 1
    junk: list[Any] = [None, {}, "not a mapping", 42]
    for other in junk:
        assert flag.evaluate({"key": "tester"}, other).reason.kind is ReasonKind.FALLTHROUGH


def test_an_invalid_segment_is_reported_by_the_flag() -> None:
    doc = copy.deepcopy(FLAG)
    doc["rules"][0]["clauses"][0]["values"] = ["broken"]
    r = evaluate(doc, {"key": "x"}, SEGMENTS, default="d")
    assert r.reason.error_kind is ErrorKind.MALFORMED_FLAG and r.value == "d"
    assert not compile_segment(SEGMENTS["broken"]).ok
    assert evaluate(doc, {"key": "x"}, {"broken": None}).reason.kind is ReasonKind.FALLTHROUGH
    assert evaluate(doc, {"key": "x"}, {"broken": "junk"}).reason.error_kind \
        is ErrorKind.MALFORMED_FLAG


def test_json_values_are_fresh_copies() -> None:
    doc: dict[str, Any] = {"key": "cfg", "kind": "json", "variations": [{"limits": [1, 2]}, {"limits": []}],
           "on": True, "off_variation": 1, "fallthrough": {"variation": 0}}
    flag = compile_flag(doc)
    first: Any = flag.evaluate({"key": "k"}).value
    first["limits"].append(99)
    assert flag.evaluate({"key": "k"}).value == {"limits": [1, 2]}
    assert doc["variations"][0] == {"limits": [1, 2]}
    off = compile_flag(dict(doc, on=False))
    assert off.evaluate({"key": "k"}).value == {"limits": []}
    assert off.evaluate({"key": "k"}).value is not off.evaluate({"key": "k"}).value


def test_expected_kinds() -> None:
    flag = compile_flag(FLAG)
    assert flag.evaluate({"key": "x"}, expected_kind=FlagKind.STRING).value == "a"
    assert flag.evaluate({"key": "x"}, expected_kind="string").value == "a"
    assert flag.evaluate({"key": "x"}, expected_kind="json").value == "a"
    r = flag.evaluate({"key": "x"}, default=False, expected_kind=FlagKind.BOOLEAN)
    assert (r.value, r.reason.error_kind) == (False, ErrorKind.WRONG_TYPE)


class _Context(Mapping[str, object]):
    """A context that is a Mapping but not a dict."""

    def __init__(self, data: dict[str, object]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self) -> Any:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_any_mapping_is_a_context() -> None:
    flag = compile_flag(FLAG)
    r = flag.evaluate(_Context({"key": "x", "country": "NZ"}))
    assert r.reason.kind is ReasonKind.RULE_MATCH


class _Hostile:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no")

    __hash__ = object.__hash__


def test_hostile_values_become_exception_errors_not_exceptions() -> None:
    class HostileContext(dict[str, object]):
        def get(self, key: str, default: object = None) -> object:
            raise RuntimeError("boom")

    r = compile_flag(FLAG).evaluate(HostileContext(key="x"), default="d")
    assert (r.value, r.reason.error_kind) == ("d", ErrorKind.EXCEPTION)


def _flags_with_every_operator() -> list[CompiledFlag]:
    ops_doc = {
        "key": "ops", "kind": "boolean", "variations": [True, False], "on": True,
        "salt": "s",
        "rules": [
            {"id": f"r{i}", "clauses": [clause], "variation": 0}
            for i, clause in enumerate([
                {"attribute": "email", "operator": "in", "values": ["a@example.com", 1, True]},
                {"attribute": "email", "operator": "not_in", "values": ["x"], "negate": True},
                {"attribute": "email", "operator": "starts_with", "values": ["beta"]},
                {"attribute": "email", "operator": "ends_with", "values": [".org"]},
                {"attribute": "/address/city", "operator": "contains", "values": ["ell"]},
                {"attribute": "email", "operator": "matches", "values": ["^\\w+@\\w+\\.org$"]},
                {"attribute": "n", "operator": "lt", "values": [0]},
                {"attribute": "n", "operator": "lte", "values": [0.5]},
                {"attribute": "n", "operator": "gt", "values": [1e9]},
                {"attribute": "n", "operator": "gte", "values": [100]},
                {"attribute": "version", "operator": "semver_eq", "values": ["1.2.3"]},
                {"attribute": "version", "operator": "semver_lt", "values": ["1.0.0"]},
                {"attribute": "version", "operator": "semver_gt", "values": ["2.0.0-rc.1"]},
                {"attribute": "when", "operator": "before", "values": ["2024-01-01"]},
                {"attribute": "when", "operator": "after", "values": [1714564800000]},
                {"attribute": "kind", "operator": "in", "values": ["org"]},
                {"operator": "segment_match", "values": ["beta", "staff", "broken"]},
                {"attribute": "tags", "operator": "in", "values": ["x"], "negate": True},
            ])
        ],
        "fallthrough": {"rollout": {"bucket_by": "/address/zip", "variations": [
            {"variation": 0, "weight": 30_000}, {"variation": 1, "weight": 70_000}]}},
    }
    return [compile_flag(ops_doc), compile_flag(FLAG)]


OPERATOR_FLAGS = _flags_with_every_operator()


@examples(200)
@given(contexts, st.none() | st.just(SEGMENTS) | st.dictionaries(st.text(max_size=3), json_values),
       json_values)
def test_evaluation_never_raises_on_arbitrary_contexts(context: Any, segments: Any,
                                                       default: Any) -> None:
    for flag in OPERATOR_FLAGS:
        assert flag.ok
        result = flag.evaluate(context, segments, default=default)
        assert isinstance(result, EvaluationResult)
        # EXCEPTION would mean the safety net caught something: the code itself must cope.
        assert result.reason.error_kind is not ErrorKind.EXCEPTION, (context, segments)
        if result.reason.kind is ReasonKind.ERROR:
            assert result.value is default and result.variation_index is None


@examples(120)
@given(valid_flags(), st.lists(valid_segments(), max_size=2), contexts)
def test_generated_flags_evaluate_without_errors(doc: dict[str, Any],
                                                 segments: list[dict[str, Any]],
                                                 context: Any) -> None:
    flag = compile_flag(doc)
    assert flag.ok, flag.errors
    segs = {s["key"]: s for s in segments}
    result = flag.evaluate(context, segs, default="dflt")
    assert result.reason.error_kind is not ErrorKind.EXCEPTION
    if isinstance(context, dict) and isinstance(context.get("key"), str) and context["key"]:
        assert result.reason.kind is not ReasonKind.ERROR
        if result.variation_index is not None:
            assert result.value == doc["variations"][result.variation_index] or \
                result.value != result.value  # NaN never equals itself
    # The uncompiled path agrees with the compiled one.
    again = evaluate(doc, context, segs, default="dflt")
    assert again.reason == result.reason and again.variation_index == result.variation_index


@examples(100)
@given(json_values, contexts)
def test_arbitrary_documents_never_raise(doc: Any, context: Any) -> None:
    result = evaluate(doc, context, default=0)
    assert result.reason.error_kind in (ErrorKind.MALFORMED_FLAG, None) or \
        result.reason.error_kind is ErrorKind.FLAG_NOT_FOUND


def test_evaluate_not_found() -> None:
    assert evaluate(None, {"key": "x"}, default=1).reason.error_kind is ErrorKind.FLAG_NOT_FOUND


def test_concurrent_evaluations_agree() -> None:
    flag = OPERATOR_FLAGS[0]
    ctxs = [{"key": f"u{i}", "email": f"user{i}@x.org", "address": {"zip": str(i)}}
            for i in range(2000)]
    expected = [flag.evaluate(c, SEGMENTS) for c in ctxs]
    failures: list[int] = []

    def worker() -> None:
        for i, c in enumerate(ctxs):
            if flag.evaluate(c, SEGMENTS) != expected[i]:
                failures.append(i)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_compiling_does_not_keep_mutable_aliases_that_matter() -> None:
    doc = copy.deepcopy(FLAG)
    flag = compile_flag(doc)
    doc["rules"][1]["clauses"][0]["values"].append("AU")
    doc["targets"][0]["values"].append("someone")
    assert flag.evaluate({"key": "y", "country": "AU"}).reason.kind is ReasonKind.FALLTHROUGH
    assert flag.evaluate({"key": "someone"}).reason.kind is ReasonKind.FALLTHROUGH
