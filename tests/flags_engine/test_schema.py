"""The published JSON Schemas agree with the validator: what it accepts, they accept."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flags.engine import flag_schema, segment_schema, validate_flag, validate_segment

from .schema_checker import SchemaChecker
from .strategies import examples, json_values, valid_flags, valid_segments

ENGINE = Path(__file__).resolve().parents[2] / "flags" / "engine"
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
FLAG = SchemaChecker(flag_schema())
SEGMENT = SchemaChecker(segment_schema())


def test_schema_files_are_json_schema_2020_12() -> None:
    for name in ("flag.schema.json", "segment.schema.json"):
        schema = json.loads((ENGINE / name).read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["additionalProperties"] is False


def test_shared_definitions_are_identical_in_both_files() -> None:
    flag_defs, segment_defs = flag_schema()["$defs"], segment_schema()["$defs"]
    shared = set(flag_defs) & set(segment_defs)
    assert {"clause", "key", "attribute", "contextKeys", "timestamp"} <= shared
    for name in shared:
        assert flag_defs[name] == segment_defs[name], name


@examples(200)
@given(valid_flags())
def test_every_valid_flag_is_valid_per_the_schema(doc: dict[str, Any]) -> None:
    assert validate_flag(doc) == []
    assert FLAG.errors(doc) == []


@examples(150)
@given(valid_segments())
def test_every_valid_segment_is_valid_per_the_schema(doc: dict[str, Any]) -> None:
    assert validate_segment(doc) == []
    assert SEGMENT.errors(doc) == []


def _mutations(doc: Any) -> st.SearchStrategy[Any]:
    """``doc`` with one value somewhere replaced by arbitrary JSON (or a member removed)."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))

    walk(doc, ())

    def apply(path: tuple[Any, ...], replacement: Any, delete: bool) -> Any:
        out = copy.deepcopy(doc)
        if not path:
            return replacement
        parent = out
        for p in path[:-1]:
            parent = parent[p]
        if delete and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
        return out

    return st.builds(apply, st.sampled_from(paths), json_values, st.booleans())


@examples(120)
@given(st.data())
def test_the_validator_is_at_least_as_strict_as_the_schema(data: st.DataObject) -> None:
    # Mutated documents: whenever the validator accepts one, the schema must too; and
    # whatever the schema rejects, the validator rejects.
    doc = data.draw(valid_flags())
    mutated = data.draw(_mutations(doc))
    if not validate_flag(mutated):
        assert FLAG.errors(mutated) == []
    seg = data.draw(valid_segments())
    mutated_seg = data.draw(_mutations(seg))
    if not validate_segment(mutated_seg):
        assert SEGMENT.errors(mutated_seg) == []


def _vector_documents() -> list[tuple[str, str, Any]]:
    out = []
    for path in sorted((VECTORS / "evaluation").glob("*.json")):
        data = json.loads(path.read_text())
        out += [("flag", f"{path.name}:{k}", d) for k, d in data.get("flags", {}).items()]
        out += [("segment", f"{path.name}:{k}", d) for k, d in data.get("segments", {}).items()]
    for path in sorted((VECTORS / "validation").glob("*.json")):
        for case in json.loads(path.read_text())["cases"]:
            out.append((case["type"], f"{path.name}:{case['description']}", case["document"]))
    return out


@pytest.mark.parametrize(("kind", "name", "doc"), _vector_documents(),
                         ids=[n for _, n, _ in _vector_documents()])
def test_vector_documents_agree_with_the_schema(kind: str, name: str, doc: Any) -> None:
    validate, checker = (validate_flag, FLAG) if kind == "flag" else (validate_segment, SEGMENT)
    if not validate(doc):
        assert checker.errors(doc) == []


@pytest.mark.parametrize(("doc", "fragment"), [
    ({"key": "x", "kind": "boolean", "variations": [True, False], "on": True}, "fallthrough"),
    ({"key": "X", "kind": "boolean", "variations": [True, False], "on": True,
      "fallthrough": {"variation": 0}}, "key"),
    ({"key": "x", "kind": "boolean", "variations": [True, 1], "on": True,
      "fallthrough": {"variation": 0}}, "variations"),
    ({"key": "x", "kind": "boolean", "variations": [True, False], "on": True,
      "fallthrough": {"variation": 0, "rollout": {"variations": []}}}, "fallthrough"),
    ({"key": "x", "kind": "boolean", "variations": [True, False], "on": True,
      "fallthrough": {"variation": 0}, "fallthru": 1}, "fallthru"),
    ({"key": "x", "kind": "string", "variations": ["a"], "on": True,
      "fallthrough": {"variation": 0},
      "rules": [{"id": "r", "clauses": [{"attribute": "a", "operator": "lt",
                                          "values": ["1"]}], "variation": 0}]}, "rules"),
    ({"key": "x", "kind": "string", "variations": ["a"], "on": True,
      "fallthrough": {"variation": 0}, "name": "bell\u0007"}, "name"),
])
def test_the_schema_rejects_wrong_shapes(doc: dict[str, Any], fragment: str) -> None:
    errors = FLAG.errors(doc)
    assert errors and any(fragment in e for e in errors), errors
    assert validate_flag(doc)


def test_against_the_jsonschema_package_when_installed() -> None:
    import jsonschema
    for schema in (flag_schema(), segment_schema()):
        jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(flag_schema())
    for kind, _, doc in _vector_documents():
        if kind == "flag" and not validate_flag(doc):
            assert list(validator.iter_errors(doc)) == []
