"""Validation: every error names the field at fault, with a message a person can act on."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given

from flags.engine import (
    MAX_DOCUMENT_BYTES,
    load_flag,
    load_segment,
    validate_flag,
    validate_segment,
)

from .strategies import examples, json_values, valid_flags

BASE: dict[str, Any] = {
    "key": "new-checkout",
    "name": "New checkout <b>flow</b> & \"friends\"",
    "description": "Line one\nline two\twith a tab",
    "kind": "boolean",
    "variations": [True, False],
    "on": True,
    "off_variation": 1,
    "targets": [{"variation": 0, "values": ["alice", "bob"]}],
    "rules": [
        {"id": "nz", "clauses": [{"attribute": "country", "operator": "in", "values": ["NZ"]}],
         "variation": 0},
        {"id": "half", "clauses": [{"attribute": "/org/plan", "operator": "starts_with",
                                    "values": ["ent"], "negate": True}],
         "rollout": {"variations": [{"variation": 0, "weight": 50000},
                                    {"variation": 1, "weight": 50000}], "bucket_by": "org_id"}},
    ],
    "fallthrough": {"rollout": {"variations": [{"variation": 0, "weight": 1000},
                                               {"variation": 1, "weight": 99000}]}},
    "salt": "c0ffee",
    "tags": ["checkout", "q3"],
    "owner": "payments@example.com",
    "temporary": True,
    "created_at": "2024-05-01T12:00:00Z",
    "updated_at": "2024-05-02T08:30:00.123+02:00",
    "version": 7,
}


def with_(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


def test_the_base_document_is_valid() -> None:
    assert validate_flag(BASE) == []


def test_minimal_documents_are_valid() -> None:
    assert validate_flag({"key": "a", "kind": "string", "variations": ["x"], "on": False,
                          "fallthrough": {"variation": 0}}) == []
    assert validate_segment({"key": "beta"}) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        parts = path.replace("[", ".").replace("]", "").split(".")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node[p]
        last = parts[-1]
        if value is DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return change


DELETE = object()

CASES: list[tuple[str, Any, str, str]] = [
    # (path changed, new value, field expected in an error, fragment of its message)
    ("fallthrough.rollout.variations.1.weight", 98000,
     "fallthrough.rollout.variations[1].weight", "weights must add up to 100000 (100%), got 99000"),
    ("fallthrough.rollout.variations.1.weight", 120000,
     "fallthrough.rollout.variations[1].weight", "between 0 and 100000"),
    ("fallthrough.rollout.variations.0.weight", -1,
     "fallthrough.rollout.variations[0].weight", "between 0 and 100000"),
    ("fallthrough.rollout.variations.0.weight", 0.5,
     "fallthrough.rollout.variations[0].weight", "whole number"),
    ("fallthrough.rollout.variations.0.weight", "1000",
     "fallthrough.rollout.variations[0].weight", "got string"),
    ("fallthrough.rollout.variations.0.variation", 2,
     "fallthrough.rollout.variations[0].variation", "no variation 2: the flag has 2 variations"),
    ("fallthrough.rollout.variations.1.variation", 0,
     "fallthrough.rollout.variations[1].variation", "already in this rollout"),
    ("fallthrough.rollout.variations", [],
     "fallthrough.rollout.variations", "must not be empty"),
    ("fallthrough.rollout.bucket_by", "/a//b", "fallthrough.rollout.bucket_by", "attribute path"),
    ("fallthrough.rollout.seed", 2**60, "fallthrough.rollout.seed", "integer between"),
    ("fallthrough.variation", 0, "fallthrough", "exactly one of variation or rollout, not both"),
    ("fallthrough.rollout", DELETE, "fallthrough", "exactly one of variation or rollout"),
    ("fallthrough", DELETE, "fallthrough", "is required"),
    ("fallthrough", 0, "fallthrough", "must be a fallthrough"),
    ("off_variation", 5, "off_variation", "no variation 5"),
    ("off_variation", True, "off_variation", "variation index"),
    ("off_variation", "1", "off_variation", "variation index"),
    ("key", "New_Checkout", "key", "a-z, 0-9"),
    ("key", "-x", "key", "starting with a letter or digit"),
    ("key", "x" * 129, "key", "1-128"),
    ("key", DELETE, "key", "is required"),
    ("kind", "bool", "kind", "must be one of boolean, string, number, json"),
    ("variations", [True, True], "variations", "exactly the variations true and false"),
    ("variations", [True, False, None], "variations", "exactly the variations true and false"),
    ("variations", [1, 0], "variations", "exactly the variations true and false"),
    ("variations", [], "variations", "must not be empty"),
    ("on", "yes", "on", "true or false"),
    ("name", "bell\u0007", "name", "control characters (found U+0007 at position 4)"),
    ("name", "line\nbreak", "name", "control characters"),
    ("name", "x" * 257, "name", "at most 256"),
    ("description", "esc\u001b[31m", "description", "control characters"),
    ("description", "del\u007f", "description", "control characters"),
    ("description", "c1\u0085", "description", "control characters"),
    ("targets.0.variation", 9, "targets[0].variation", "no variation 9"),
    ("targets.0.values.1", "alice", "targets[0].values[1]", "appears twice"),
    ("targets.0.values.1", "", "targets[0].values[1]", "must not be empty"),
    ("targets.0.values.1", 42, "targets[0].values[1]", "context key (a string)"),
    ("targets.0.extra", 1, "targets[0].extra", "unknown field"),
    ("rules.1.id", "nz", "rules[1].id", "duplicate rule id 'nz' (also rules[0])"),
    ("rules.0.id", "", "rules[0].id", "must be 1-128"),
    ("rules.0.variation", 3, "rules[0].variation", "no variation 3"),
    ("rules.0.rollout", {"variations": [{"variation": 0, "weight": 100000}]},
     "rules[0]", "exactly one of variation or rollout, not both"),
    ("rules.0.clauses", [], "rules[0].clauses", "must not be empty"),
    ("rules.0.clauses.0.operator", "equals", "rules[0].clauses[0].operator", "unknown operator"),
    ("rules.0.clauses.0.attribute", DELETE, "rules[0].clauses[0].attribute", "is required"),
    ("rules.0.clauses.0.attribute", "", "rules[0].clauses[0].attribute", "must not be empty"),
    ("rules.0.clauses.0.values", [], "rules[0].clauses[0].values", "must not be empty"),
    ("rules.0.clauses.0.values", "NZ", "rules[0].clauses[0].values", "must be an array"),
    ("rules.0.clauses.0.values.0", None, "rules[0].clauses[0].values[0]",
     "a string, number or boolean"),
    ("rules.0.clauses.0.values.0", ["NZ"], "rules[0].clauses[0].values[0]",
     "a string, number or boolean"),
    ("rules.0.clauses.0.negate", 1, "rules[0].clauses[0].negate", "true or false"),
    ("rules.0.clauses.0.frobnicate", 1, "rules[0].clauses[0].frobnicate", "unknown field"),
    ("rules.1.clauses.0.values.0", 3, "rules[1].clauses[0].values[0]",
     "must be a string for operator starts_with"),
    ("rules.1.rollout.variations.0.weight", 50001, "rules[1].rollout.variations[1].weight",
     "got 100001"),
    ("tags.1", "checkout", "tags[1]", "duplicate tag"),
    ("tags.1", "", "tags[1]", "must not be empty"),
    ("owner", 5, "owner", "string or null"),
    ("temporary", "no", "temporary", "true or false"),
    ("created_at", "yesterday", "created_at", "RFC 3339"),
    ("created_at", "2024-05-01", "created_at", "RFC 3339"),
    ("updated_at", "2024-02-30T00:00:00Z", "updated_at", "RFC 3339"),
    ("version", -1, "version", "non-negative integer"),
    ("salt", "x\u0000", "salt", "control characters"),
    ("fallthru", {"variation": 0}, "fallthru", "unknown field; the allowed fields are"),
]


@pytest.mark.parametrize(("path", "value", "field", "fragment"), CASES,
                         ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES])
def test_errors_point_at_the_field(path: str, value: Any, field: str, fragment: str) -> None:
    errors = validate_flag(with_(_set(path, value)))
    assert any(e.field == field and fragment in e.message for e in errors), \
        [e.to_json() for e in errors]


OPERATOR_VALUES: list[tuple[str, Any, bool]] = [
    ("in", "x", True), ("in", 1.5, True), ("in", True, True), ("in", None, False),
    ("in", {"a": 1}, False), ("not_in", 3, True),
    ("starts_with", "x", True), ("ends_with", 1, False), ("contains", "", True),
    ("matches", "^a+$", True), ("matches", "(a+)+$", False), ("matches", "(?<=a)b", False),
    ("matches", "a" * 257, False), ("matches", "[", False), ("matches", 5, False),
    ("lt", 5, True), ("lte", -1.5, True), ("gt", "5", False), ("gte", True, False),
    ("semver_eq", "1.2.3", True), ("semver_lt", "1.2", True), ("semver_gt", "v1.2.3", False),
    ("semver_eq", "01.2.3", False), ("semver_eq", "1.2.3-rc.1+b.2", True),
    ("before", "2024-05-01T12:00:00Z", True), ("after", "2024-05-01", True),
    ("before", 1714564800000, True), ("after", "2024-05-01T12:00:00", False),
    ("before", "2024-13-01", False), ("after", "May 1st", False), ("before", True, False),
    ("segment_match", "beta", True), ("segment_match", "Beta Testers", False),
]


@pytest.mark.parametrize(("op", "value", "ok"), OPERATOR_VALUES,
                         ids=[f"{o}:{v!r}"[:40] for o, v, _ in OPERATOR_VALUES])
def test_clause_values_are_checked_per_operator(op: str, value: Any, ok: bool) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["rules"][0]["clauses"][0] = {"attribute": "a", "operator": op, "values": ["x", value]
                                         if op in ("in", "starts_with", "contains", "not_in")
                                         else [value]}

    errors = validate_flag(with_(change))
    if ok:
        assert errors == []
    else:
        assert [e.field for e in errors] == ["rules[0].clauses[0].values[" + (
            "1" if op in ("in", "starts_with", "contains", "not_in") else "0") + "]"], errors


def test_segment_match_needs_no_attribute() -> None:
    doc = with_(_set("rules.0.clauses.0", {"operator": "segment_match", "values": ["beta"]}))
    assert validate_flag(doc) == []


@pytest.mark.parametrize(("kind", "variations", "field", "fragment"), [
    ("string", ["a", 1], "variations[1]", "must be a string (this is a string flag), got number"),
    ("string", ["a", "a"], "variations[1]", "duplicates variation 0"),
    ("number", [1, "2"], "variations[1]", "must be a number"),
    ("number", [1, True], "variations[1]", "got boolean"),
    ("number", [1, 1.0], "variations[1]", "duplicates variation 0"),
    ("json", [{"a": 1, "b": 2}, {"b": 2, "a": 1}], "variations[1]", "duplicates variation 0"),
    ("json", [float("nan")], "variations[0]", "finite number"),
    ("json", [list(range(101))], "", ""),
    ("string", [str(i) for i in range(101)], "variations", "at most 100"),
])
def test_variations_must_have_the_flags_kind(kind: str, variations: list[Any], field: str,
                                             fragment: str) -> None:
    doc = {"key": "k", "kind": kind, "variations": variations, "on": True,
           "fallthrough": {"variation": 0}}
    errors = validate_flag(doc)
    if field == "":  # a long json variation is fine
        assert errors == []
        return
    assert any(e.field == field and fragment in e.message for e in errors), errors


def test_booleans_may_come_in_either_order() -> None:
    assert validate_flag(with_(_set("variations", [False, True]))) == []


def test_integral_doubles_count_as_integers() -> None:
    doc = with_(_set("fallthrough.rollout.variations.0.weight", 1000.0))
    assert validate_flag(doc) == []


def test_markup_in_names_is_accepted_unchanged() -> None:
    doc = with_(_set("name", "<script>alert('x')</script>"))
    assert validate_flag(doc) == []


def test_oversize_documents_are_refused_at_the_root() -> None:
    doc = with_(_set("description", "x" * 8000))
    doc["targets"][0]["values"] = [f"user-{i:07d}" for i in range(MAX_DOCUMENT_BYTES // 14)]
    errors = validate_flag(doc)
    assert [e.field for e in errors] == [""]
    assert "limit is 262144 bytes (256 KiB)" in errors[0].message


def test_deep_nesting_is_refused_with_its_path() -> None:
    value: Any = 1
    for _ in range(100):
        value = [value]
    doc = {"key": "k", "kind": "json", "variations": [value], "on": True,
           "fallthrough": {"variation": 0}}
    errors = validate_flag(doc)
    assert errors and errors[0].field.startswith("variations[0][0]")
    assert "nest at most 64 levels" in errors[0].message


def test_non_json_values_are_refused() -> None:
    doc = with_(_set("tags", {"a", "b"}))
    assert [e.field for e in validate_flag(doc)] == ["tags"]
    doc = with_(_set("version", float("inf")))
    assert [e.field for e in validate_flag(doc)] == ["version"]
    doc = with_(_set("name", "\ud800"))
    assert [e.field for e in validate_flag(doc)] == ["name"]


@pytest.mark.parametrize("doc", [None, [], "flag", 3, True])
def test_a_document_must_be_an_object(doc: Any) -> None:
    errors = validate_flag(doc)
    assert len(errors) == 1 and errors[0].field == ""
    assert errors[0].to_json() == {"field": "", "message": errors[0].message}


def test_errors_are_capped() -> None:
    doc = with_(_set("tags", [""] * 50))
    doc["targets"][0]["values"] = [""] * 500
    assert len(validate_flag(doc)) == 100


def test_load_flag_parses_checks_and_validates() -> None:
    doc, errors = load_flag(json.dumps(BASE).encode())
    assert errors == [] and doc == BASE
    _, errors = load_flag(b'{"key": ')
    assert errors[0].field == "" and "not valid JSON" in errors[0].message
    _, errors = load_flag(b'{"key": NaN}')
    assert "NaN" in errors[0].message
    _, errors = load_flag(b"\xff")
    assert "not UTF-8" in errors[0].message
    _, errors = load_flag(b" " * (4 * MAX_DOCUMENT_BYTES + 1))
    assert "limit is 262144 bytes" in errors[0].message
    _, errors = load_flag("[" * 100_000 + "]" * 100_000)
    assert errors[0].field == ""
    _, errors = load_segment('{"key": "beta", "included": ["a"], "excluded": ["a"]}')
    assert [(e.field, e.message) for e in errors] == [
        ("excluded[0]", "context key 'a' is also included (included[0])")]


@pytest.mark.parametrize(("doc", "field", "fragment"), [
    ({"key": "s", "rules": [{"id": "r", "clauses": [
        {"operator": "segment_match", "values": ["t"]}]}]},
     "rules[0].clauses[0].operator", "segments do not nest"),
    ({"key": "s", "rules": [{"id": "r", "clauses": [
        {"attribute": "a", "operator": "in", "values": [1]}], "variation": 0}]},
     "rules[0].variation", "unknown field"),
    ({"key": "s", "included": "alice"}, "included", "must be an array"),
    ({"key": "s", "included": ["a", "a"]}, "included[1]", "appears twice"),
    ({"key": "S"}, "key", "a-z"),
    ({"name": "x"}, "key", "is required"),
    ({"key": "s", "salt": "x"}, "salt", "unknown field"),
])
def test_segment_errors_point_at_the_field(doc: dict[str, Any], field: str, fragment: str) -> None:
    errors = validate_segment(doc)
    assert any(e.field == field and fragment in e.message for e in errors), errors


@examples(300)
@given(json_values)
def test_validation_never_raises_on_arbitrary_json(doc: Any) -> None:
    for errors in (validate_flag(doc), validate_segment(doc)):
        assert all("internal" not in e.message for e in errors)


@examples(80)
@given(valid_flags(), json_values)
def test_validation_never_raises_when_a_field_is_replaced(doc: dict[str, Any], junk: Any) -> None:
    for name in list(doc):
        broken = dict(doc, **{name: junk})
        errors = validate_flag(broken)
        assert all("internal" not in e.message for e in errors)
    for name in ("fallthrough", "rules", "targets"):
        value = doc.get(name)
        if isinstance(value, dict):
            for inner in list(value):
                errors = validate_flag(dict(doc, **{name: dict(value, **{inner: junk})}))
                assert all("internal" not in e.message for e in errors)
